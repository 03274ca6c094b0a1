//! Headers-exchange matching with RabbitMQ's semantics.
//!
//! A binding's arguments hold `x-match` and the header values to compare:
//!
//! - `all` (the default): every listed header is present with an equal value;
//! - `any`: at least one is;
//! - `all-with-x` / `any-with-x` (RabbitMQ 3.10+): the same, but binding keys starting with
//!   `x-` take part too; with plain `all`/`any` they are ignored.
//!
//! A binding value of type void means "present, whatever its value" (RabbitMQ). With no keys
//! besides `x-match`, `all` matches every message (all of nothing holds) and `any` none.
//!
//! Equality follows Erlang's `==` on RabbitMQ's decoded values, which is what clients see:
//! numbers compare by value across widths and between integers and floats (`1 == 1.0`),
//! long and short strings and byte arrays compare by bytes, timestamps as integers.

use amq_protocol::types::{AMQPValue, FieldTable};

use super::error::ModelError;

/// How the conditions of a binding combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XMatch {
    All,
    Any,
}

/// A binding's compiled match: what to compare, decided once at bind time.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadersMatch {
    mode: XMatch,
    /// (header name, expected value; `None` for void, i.e. presence only).
    conditions: Vec<(String, Option<AMQPValue>)>,
}

impl HeadersMatch {
    /// Compiles a binding's arguments. An `x-match` other than the four modes is refused with
    /// 406, as RabbitMQ does.
    pub fn from_arguments(args: &FieldTable) -> Result<Self, ModelError> {
        let (mode, with_x) = match args.inner().get("x-match") {
            None => (XMatch::All, false),
            Some(value) => match string_of(value).as_deref() {
                Some("all") => (XMatch::All, false),
                Some("any") => (XMatch::Any, false),
                Some("all-with-x") => (XMatch::All, true),
                Some("any-with-x") => (XMatch::Any, true),
                _ => {
                    return Err(ModelError::InvalidBindingArgument {
                        arg: "x-match",
                        reason: format!("{value:?} is not all, any, all-with-x or any-with-x"),
                    });
                }
            },
        };
        let conditions = args
            .into_iter()
            .filter(|(key, _)| key.as_str() != "x-match")
            .filter(|(key, _)| with_x || !key.as_str().starts_with("x-"))
            .map(|(key, value)| {
                let expected = match value {
                    AMQPValue::Void => None,
                    other => Some(other.clone()),
                };
                (key.as_str().to_owned(), expected)
            })
            .collect();
        Ok(Self { mode, conditions })
    }

    /// Whether a message with `headers` (none counts as empty) matches.
    pub fn matches(&self, headers: Option<&FieldTable>) -> bool {
        let holds = |(key, expected): &(String, Option<AMQPValue>)| {
            let Some(actual) = headers.and_then(|h| h.inner().get(key.as_str())) else {
                return false;
            };
            match expected {
                None => true,
                Some(expected) => values_equal(expected, actual),
            }
        };
        match self.mode {
            XMatch::All => self.conditions.iter().all(holds),
            XMatch::Any => self.conditions.iter().any(holds),
        }
    }
}

fn string_of(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// A value reduced to what Erlang's `==` compares.
enum Canon<'a> {
    Int(i128),
    Float(f64),
    Bytes(&'a [u8]),
    Bool(bool),
    Other(&'a AMQPValue),
}

fn canon(value: &AMQPValue) -> Canon<'_> {
    use AMQPValue as V;
    match value {
        V::ShortShortInt(v) => Canon::Int((*v).into()),
        V::ShortShortUInt(v) => Canon::Int((*v).into()),
        V::ShortInt(v) => Canon::Int((*v).into()),
        V::ShortUInt(v) => Canon::Int((*v).into()),
        V::LongInt(v) => Canon::Int((*v).into()),
        V::LongUInt(v) => Canon::Int((*v).into()),
        V::LongLongInt(v) => Canon::Int((*v).into()),
        V::Timestamp(v) => Canon::Int((*v).into()),
        V::Float(v) => Canon::Float((*v).into()),
        V::Double(v) => Canon::Float(*v),
        V::LongString(s) => Canon::Bytes(s.as_bytes()),
        V::ShortString(s) => Canon::Bytes(s.as_str().as_bytes()),
        V::ByteArray(b) => Canon::Bytes(b.as_slice()),
        V::Boolean(b) => Canon::Bool(*b),
        other => Canon::Other(other),
    }
}

/// Erlang-style equality of two field values.
pub fn values_equal(a: &AMQPValue, b: &AMQPValue) -> bool {
    match (canon(a), canon(b)) {
        (Canon::Int(x), Canon::Int(y)) => x == y,
        (Canon::Float(x), Canon::Float(y)) => x == y,
        // Erlang's == compares an integer and a float by value; i128 → f64 is exact for the
        // magnitudes field values can hold up to 2^53, and the comparison is what RabbitMQ does.
        (Canon::Int(x), Canon::Float(y)) | (Canon::Float(y), Canon::Int(x)) => (x as f64) == y,
        (Canon::Bytes(x), Canon::Bytes(y)) => x == y,
        (Canon::Bool(x), Canon::Bool(y)) => x == y,
        (Canon::Other(x), Canon::Other(y)) => nested_equal(x, y),
        _ => false,
    }
}

/// Arrays, tables, decimals and void: element by element with the same equality. Depth is
/// bounded by the decoder's nesting limit.
fn nested_equal(a: &AMQPValue, b: &AMQPValue) -> bool {
    match (a, b) {
        (AMQPValue::FieldArray(x), AMQPValue::FieldArray(y)) => {
            x.as_slice().len() == y.as_slice().len()
                && x.as_slice()
                    .iter()
                    .zip(y.as_slice())
                    .all(|(x, y)| values_equal(x, y))
        }
        (AMQPValue::FieldTable(x), AMQPValue::FieldTable(y)) => {
            x.inner().len() == y.inner().len()
                && x.inner().iter().all(|(k, v)| {
                    y.inner()
                        .get(k.as_str())
                        .is_some_and(|w| values_equal(v, w))
                })
        }
        (AMQPValue::DecimalValue(x), AMQPValue::DecimalValue(y)) => x == y,
        (AMQPValue::Void, AMQPValue::Void) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in entries {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    fn s(v: &str) -> AMQPValue {
        AMQPValue::LongString(v.into())
    }

    fn binding(entries: &[(&str, AMQPValue)]) -> HeadersMatch {
        HeadersMatch::from_arguments(&table(entries)).unwrap()
    }

    #[test]
    fn all_requires_every_header() {
        let m = binding(&[("x-match", s("all")), ("a", s("1")), ("b", s("2"))]);
        assert!(m.matches(Some(&table(&[("a", s("1")), ("b", s("2")), ("c", s("3"))]))));
        assert!(!m.matches(Some(&table(&[("a", s("1"))]))));
        assert!(!m.matches(Some(&table(&[("a", s("1")), ("b", s("9"))]))));
    }

    #[test]
    fn x_match_defaults_to_all() {
        let m = binding(&[("a", s("1")), ("b", s("2"))]);
        assert!(!m.matches(Some(&table(&[("a", s("1"))]))));
    }

    #[test]
    fn any_requires_one_header() {
        let m = binding(&[("x-match", s("any")), ("a", s("1")), ("b", s("2"))]);
        assert!(m.matches(Some(&table(&[("b", s("2"))]))));
        assert!(!m.matches(Some(&table(&[("a", s("2"))]))));
        assert!(!m.matches(None));
    }

    #[test]
    fn binding_with_only_x_match_all_matches_everything_and_any_nothing() {
        assert!(binding(&[("x-match", s("all"))]).matches(None));
        assert!(binding(&[]).matches(Some(&table(&[("a", s("1"))]))));
        assert!(!binding(&[("x-match", s("any"))]).matches(Some(&table(&[("a", s("1"))]))));
    }

    #[test]
    fn x_prefixed_binding_keys_are_ignored_unless_with_x() {
        let plain = binding(&[("x-match", s("all")), ("x-tenant", s("t1")), ("a", s("1"))]);
        assert!(plain.matches(Some(&table(&[("a", s("1"))]))));
        let with_x = binding(&[
            ("x-match", s("all-with-x")),
            ("x-tenant", s("t1")),
            ("a", s("1")),
        ]);
        assert!(!with_x.matches(Some(&table(&[("a", s("1"))]))));
        assert!(with_x.matches(Some(&table(&[("a", s("1")), ("x-tenant", s("t1"))]))));
    }

    #[test]
    fn any_with_x_matches_on_an_x_header_alone() {
        let m = binding(&[
            ("x-match", s("any-with-x")),
            ("x-tenant", s("t1")),
            ("a", s("1")),
        ]);
        assert!(m.matches(Some(&table(&[("x-tenant", s("t1"))]))));
    }

    #[test]
    fn only_x_keys_with_any_match_nothing() {
        let m = binding(&[("x-match", s("any")), ("x-tenant", s("t1"))]);
        assert!(!m.matches(Some(&table(&[("x-tenant", s("t1"))]))));
    }

    #[test]
    fn void_binding_value_checks_presence_only() {
        let m = binding(&[("a", AMQPValue::Void)]);
        assert!(m.matches(Some(&table(&[("a", s("anything"))]))));
        assert!(!m.matches(Some(&table(&[("b", s("1"))]))));
    }

    #[test]
    fn numbers_compare_by_value_across_types() {
        let m = binding(&[("n", AMQPValue::LongInt(42))]);
        assert!(m.matches(Some(&table(&[("n", AMQPValue::ShortShortUInt(42))]))));
        assert!(m.matches(Some(&table(&[("n", AMQPValue::LongLongInt(42))]))));
        assert!(m.matches(Some(&table(&[("n", AMQPValue::Double(42.0))]))));
        assert!(!m.matches(Some(&table(&[("n", AMQPValue::LongInt(43))]))));
        assert!(
            !m.matches(Some(&table(&[("n", s("42"))]))),
            "no string/number coercion"
        );
    }

    #[test]
    fn short_and_long_strings_compare_by_bytes() {
        let m = binding(&[("k", AMQPValue::ShortString("v".into()))]);
        assert!(m.matches(Some(&table(&[("k", s("v"))]))));
    }

    #[test]
    fn booleans_do_not_equal_numbers() {
        let m = binding(&[("b", AMQPValue::Boolean(true))]);
        assert!(m.matches(Some(&table(&[("b", AMQPValue::Boolean(true))]))));
        assert!(!m.matches(Some(&table(&[("b", AMQPValue::LongInt(1))]))));
    }

    #[test]
    fn nested_tables_compare_element_wise() {
        let inner = |n| AMQPValue::FieldTable(table(&[("n", AMQPValue::LongInt(n))]));
        let m = binding(&[("t", inner(1))]);
        assert!(m.matches(Some(&table(&[("t", inner(1))]))));
        assert!(!m.matches(Some(&table(&[("t", inner(2))]))));
    }

    #[test]
    fn invalid_x_match_is_refused_with_precondition_failed() {
        let err = HeadersMatch::from_arguments(&table(&[("x-match", s("some"))])).unwrap_err();
        assert_eq!(err.reply_code().code(), 406);
    }
}
