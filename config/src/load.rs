//! The layered loader. Every source is turned into TOML values and merged, key by key, over the
//! embedded defaults; only the merged table is deserialized into [`Config`]. That keeps one
//! place (serde) that knows types, and lets each source be partial.
//!
//! The default table doubles as the schema: a key that is not in it is unknown, whatever the
//! source, except the few [`OPTIONAL_KEYS`] that have no default value. Unknown keys are caught
//! here, before deserialization, so that the error can name the variable, flag or file that
//! carried them; for the same reason each merged key remembers its [`Origin`].

use std::collections::HashMap;
use std::path::Path;

use toml::{Table, Value};

use crate::DEFAULT_TOML;
use crate::error::{ConfigError, Origin};
use crate::schema::Config;

/// Environment variables with this prefix are config keys: `SWITCHBOARD_KAFKA__LISTEN` is
/// `kafka.listen` (sections separated by a double underscore, names case-insensitive).
pub const ENV_PREFIX: &str = "SWITCHBOARD_";

/// The one `SWITCHBOARD_` variable that is not a key: the binary reads the path of its config
/// file from it (as the default of `--config`), and [`load`] ignores it.
pub const CONFIG_FILE_ENV: &str = "SWITCHBOARD_CONFIG";

/// Keys that have no default value, so are absent from the default table, yet may be set.
/// `default.toml` shows each as a commented-out example. All of them take strings.
pub const OPTIONAL_KEYS: [&str; 3] = ["kafka.advertised_host", "meta.dir", "meta.listen"];

/// Sections whose keys are names chosen by the operator (user names, node ids), not fixed
/// settings. Their values are strings.
pub const OPEN_SECTIONS: [&str; 2] = ["users", "meta.members"];

/// Loads the configuration: the embedded defaults, overridden by `file` (a TOML document that
/// may hold any subset of the keys), then by the `SWITCHBOARD_*` variables of `env` (pass
/// `std::env::vars()`; other variables are ignored), then by `sets`, each `key.path=value`.
///
/// A variable or flag value is taken as a string when the key's default is a string (so
/// `cluster_id=123` is the string "123"; a quoted `"x"` is unquoted), and otherwise as a TOML
/// scalar (`true`, `5`), or as a string when it is none, which then fails to deserialize with
/// an error naming the key and the variable or flag.
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    sets: &[String],
) -> Result<Config, ConfigError> {
    let mut layers = Layers::defaults();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        layers.merge_document(&text, &Origin::File(path.to_owned()))?;
    }
    let mut env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX) && name != CONFIG_FILE_ENV)
        .collect();
    // Sorted so that, of several bad variables, the same one is reported on every run.
    env.sort();
    for (name, value) in env {
        layers.set(&env_key(&name), &value, Origin::Env(name))?;
    }
    for flag in sets {
        let (key, value) = flag
            .split_once('=')
            .ok_or_else(|| ConfigError::BadFlag { flag: flag.clone() })?;
        layers.set(key.trim(), value, Origin::Flag(flag.clone()))?;
    }
    layers.into_config()
}

impl Default for Config {
    /// The embedded defaults, with nothing overridden.
    fn default() -> Self {
        load(None, [], &[]).expect("the embedded default config loads (tested)")
    }
}

/// `SWITCHBOARD_STORAGE__LOG__FSYNC` → `storage.log.fsync`.
fn env_key(name: &str) -> String {
    let rest = name.strip_prefix(ENV_PREFIX).unwrap_or(name);
    let segments: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
    segments.join(".")
}

/// `storage.log.fsync` → `SWITCHBOARD_STORAGE__LOG__FSYNC`.
fn env_name(key: &str) -> String {
    let segments: Vec<String> = key.split('.').map(str::to_ascii_uppercase).collect();
    format!("{ENV_PREFIX}{}", segments.join("__"))
}

/// What the default config says a dotted key is.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Unknown,
    Section,
    /// A key whose values are strings: overrides are taken verbatim.
    StringKey,
    OtherKey,
}

struct Layers {
    /// The parsed embedded defaults, kept unmerged as the schema.
    defaults: Table,
    merged: Table,
    /// Dotted key → where its current value came from; absent means the defaults.
    origins: HashMap<String, Origin>,
}

impl Layers {
    fn defaults() -> Self {
        let defaults: Table =
            toml::from_str(DEFAULT_TOML).expect("the embedded default config is TOML (tested)");
        Layers {
            merged: defaults.clone(),
            defaults,
            origins: HashMap::new(),
        }
    }

    fn kind(&self, key: &str) -> Kind {
        if OPTIONAL_KEYS.contains(&key) {
            return Kind::StringKey;
        }
        let in_open_section = OPEN_SECTIONS.iter().any(|section| {
            key.strip_prefix(section)
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|name| !name.is_empty() && !name.contains('.'))
        });
        if in_open_section {
            return Kind::StringKey;
        }
        let mut table = &self.defaults;
        let mut segments = key.split('.').peekable();
        while let Some(segment) = segments.next() {
            let last = segments.peek().is_none();
            match table.get(segment) {
                Some(Value::Table(inner)) if !last => table = inner,
                Some(Value::Table(_)) => return Kind::Section,
                Some(Value::String(_)) if last => return Kind::StringKey,
                Some(_) if last => return Kind::OtherKey,
                _ => return Kind::Unknown,
            }
        }
        Kind::Unknown
    }

    /// Merges a TOML document key by key: a key it gives replaces the current value, a key it
    /// leaves out keeps it.
    fn merge_document(&mut self, text: &str, origin: &Origin) -> Result<(), ConfigError> {
        let table: Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            origin: origin.clone(),
            message: e.to_string(),
        })?;
        self.merge_table("", table, origin)
    }

    fn merge_table(
        &mut self,
        prefix: &str,
        table: Table,
        origin: &Origin,
    ) -> Result<(), ConfigError> {
        for (name, value) in table {
            let key = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}.{name}")
            };
            match (self.kind(&key), value) {
                (Kind::Unknown, _) => return Err(self.unknown_key(key, origin.clone())),
                (Kind::Section, Value::Table(inner)) => self.merge_table(&key, inner, origin)?,
                // A wrong type, section or not, is left for deserialization to report.
                (_, value) => self.insert(&key, value, origin.clone()),
            }
        }
        Ok(())
    }

    /// Sets one key from the text of an environment variable or flag.
    fn set(&mut self, key: &str, raw: &str, origin: Origin) -> Result<(), ConfigError> {
        let value = match self.kind(key) {
            Kind::Unknown => return Err(self.unknown_key(key.to_owned(), origin)),
            Kind::Section => {
                let example = self
                    .known_keys()
                    .into_iter()
                    .find(|known| known.starts_with(&format!("{key}.")))
                    .unwrap_or_default();
                return Err(ConfigError::NotAKey {
                    key: key.to_owned(),
                    example: render_key(&example, &origin),
                    origin,
                });
            }
            Kind::StringKey => Value::String(unquote(raw)),
            Kind::OtherKey => scalar(raw),
        };
        self.insert(key, value, origin);
        Ok(())
    }

    fn insert(&mut self, key: &str, value: Value, origin: Origin) {
        let mut table = &mut self.merged;
        let mut segments: Vec<&str> = key.split('.').collect();
        let leaf = segments.pop().unwrap_or_default();
        for segment in segments {
            let entry = table
                .entry(segment)
                .or_insert_with(|| Value::Table(Table::new()));
            if !entry.is_table() {
                // A lower source gave a scalar where a section belongs; this key wins.
                *entry = Value::Table(Table::new());
            }
            let Value::Table(inner) = entry else {
                unreachable!("made a table just above")
            };
            table = inner;
        }
        table.insert(leaf.to_owned(), value);
        self.origins.insert(key.to_owned(), origin);
    }

    fn into_config(self) -> Result<Config, ConfigError> {
        let Layers {
            merged, origins, ..
        } = self;
        let origin_of = |key: &str| -> Origin {
            // The key itself or, for an error inside a value, the nearest enclosing key.
            let mut key = key;
            loop {
                if let Some(origin) = origins.get(key) {
                    return origin.clone();
                }
                match key.rsplit_once('.') {
                    Some((parent, _)) => key = parent,
                    None => return Origin::Default,
                }
            }
        };
        let config: Config =
            serde_path_to_error::deserialize(Value::Table(merged)).map_err(|e| {
                let key = e.path().to_string();
                ConfigError::Invalid {
                    origin: origin_of(&key),
                    key,
                    message: e.into_inner().message().to_owned(),
                }
            })?;
        config
            .check()
            .map_err(|(key, message)| ConfigError::Invalid {
                key: key.to_owned(),
                origin: origin_of(key),
                message,
            })?;
        Ok(config)
    }

    /// Every settable key, dotted, in the default file's order.
    fn known_keys(&self) -> Vec<String> {
        fn walk(prefix: &str, table: &Table, out: &mut Vec<String>) {
            for (name, value) in table {
                let key = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                match value {
                    Value::Table(inner) => walk(&key, inner, out),
                    _ => out.push(key),
                }
            }
        }
        let mut keys = Vec::new();
        walk("", &self.defaults, &mut keys);
        keys.extend(OPTIONAL_KEYS.iter().map(|key| (*key).to_owned()));
        keys
    }

    fn unknown_key(&self, key: String, origin: Origin) -> ConfigError {
        let written = render_key(&key, &origin);
        let suggestion = self
            .known_keys()
            .iter()
            .map(|known| render_key(known, &origin))
            .map(|known| (edit_distance(&written, &known), known))
            .filter(|(distance, _)| *distance <= 3)
            .min_by_key(|(distance, _)| *distance)
            .map(|(_, known)| known);
        ConfigError::UnknownKey {
            key,
            origin,
            suggestion,
        }
    }
}

/// A key as the origin writes it: an environment variable name for a variable, dotted else.
fn render_key(key: &str, origin: &Origin) -> String {
    match origin {
        Origin::Env(_) => env_name(key),
        _ => key.to_owned(),
    }
}

/// The TOML scalar that `raw` spells (`true`, `5`, `1.5`, `"x"`), or `raw` as a string.
fn scalar(raw: &str) -> Value {
    // Parsed as the value of a one-key document, so that a value that smuggles in more
    // (`5\nother = 1`) or is not a scalar (`[1]`) falls back to a plain string.
    let parsed = toml::from_str::<Table>(&format!("v = {raw}"))
        .ok()
        .filter(|table| table.len() == 1)
        .and_then(|mut table| table.remove("v"))
        .filter(|value| !value.is_table() && !value.is_array());
    parsed.unwrap_or_else(|| Value::String(raw.to_owned()))
}

/// A string value as written, or unquoted when written as a TOML string (`"x"`, `'x'`).
fn unquote(raw: &str) -> String {
    match scalar(raw) {
        Value::String(unquoted) if raw.starts_with(['"', '\'']) => unquoted,
        _ => raw.to_owned(),
    }
}

/// Levenshtein distance, case-insensitive: enough to suggest the key a typo meant.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_map_to_dotted_keys_and_back() {
        assert_eq!(env_key("SWITCHBOARD_DATA_DIR"), "data_dir");
        assert_eq!(env_key("SWITCHBOARD_KAFKA__LISTEN"), "kafka.listen");
        assert_eq!(
            env_key("SWITCHBOARD_STORAGE__LOG__FSYNC"),
            "storage.log.fsync"
        );
        assert_eq!(
            env_name("storage.log.fsync"),
            "SWITCHBOARD_STORAGE__LOG__FSYNC"
        );
        assert_eq!(env_name("data_dir"), "SWITCHBOARD_DATA_DIR");
    }

    #[test]
    fn the_default_table_says_what_each_key_is() {
        let layers = Layers::defaults();
        assert_eq!(layers.kind("kafka"), Kind::Section);
        assert_eq!(layers.kind("storage.log"), Kind::Section);
        assert_eq!(layers.kind("kafka.listen"), Kind::StringKey);
        assert_eq!(layers.kind("kafka.enabled"), Kind::OtherKey);
        assert_eq!(layers.kind("node_id"), Kind::OtherKey);
        assert_eq!(layers.kind("kafka.advertised_host"), Kind::StringKey);
        assert_eq!(layers.kind("meta.dir"), Kind::StringKey);
        assert_eq!(layers.kind("meta.members"), Kind::Section);
        assert_eq!(layers.kind("meta.members.2"), Kind::StringKey);
        assert_eq!(layers.kind("meta.members.2.x"), Kind::Unknown);
        assert_eq!(layers.kind("users.alice"), Kind::StringKey);
        assert_eq!(layers.kind("kafka.listen.port"), Kind::Unknown);
        assert_eq!(layers.kind("kafka.listn"), Kind::Unknown);
        assert_eq!(layers.kind(""), Kind::Unknown);
        assert_eq!(layers.kind("kafka..listen"), Kind::Unknown);
    }

    #[test]
    fn scalars_parse_as_toml_else_stay_strings() {
        assert_eq!(scalar("true"), Value::Boolean(true));
        assert_eq!(scalar("5"), Value::Integer(5));
        assert_eq!(scalar("\"x\""), Value::String("x".into()));
        assert_eq!(scalar("hello world"), Value::String("hello world".into()));
        assert_eq!(scalar("[1]"), Value::String("[1]".into()));
        assert_eq!(scalar("5\nv2 = 1"), Value::String("5\nv2 = 1".into()));
        assert_eq!(scalar(""), Value::String(String::new()));
        assert_eq!(unquote("\"a b\""), "a b");
        assert_eq!(unquote("'x'"), "x");
        assert_eq!(unquote("123"), "123");
        assert_eq!(unquote("\"unterminated"), "\"unterminated");
    }

    #[test]
    fn edit_distance_counts_single_character_edits() {
        assert_eq!(edit_distance("listen", "listen"), 0);
        assert_eq!(edit_distance("listn", "listen"), 1);
        assert_eq!(edit_distance("LISTEN", "listen"), 0);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
