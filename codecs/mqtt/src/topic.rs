//! Topic names and topic filters (MQTT 5 §4.7): validation, matching, shared subscriptions, and
//! the subscription tree that maps a published topic to its subscribers.

use std::collections::HashMap;

/// Why a topic name or filter is not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic is empty")]
    Empty,
    #[error("topic name contains a wildcard (+ or #)")]
    WildcardInName,
    #[error("'#' must be the last level of a topic filter, alone in its level")]
    MisplacedMultiLevel,
    #[error("'+' must occupy a whole level of a topic filter")]
    MisplacedSingleLevel,
    #[error(
        "shared subscription is not $share/<group>/<filter> with a non-empty group without wildcards"
    )]
    BadShare,
    #[error("topic is longer than 65535 bytes")]
    TooLong,
}

/// Checks a topic name as used in PUBLISH (§4.7.3): non-empty, no wildcards.
pub fn validate_name(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > usize::from(u16::MAX) {
        return Err(TopicError::TooLong);
    }
    if topic.contains(['+', '#']) {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Checks a topic filter as used in SUBSCRIBE (§4.7.1): wildcards only as whole levels, `#`
/// only last.
pub fn validate_filter(filter: &str) -> Result<(), TopicError> {
    if filter.is_empty() {
        return Err(TopicError::Empty);
    }
    if filter.len() > usize::from(u16::MAX) {
        return Err(TopicError::TooLong);
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(TopicError::MisplacedMultiLevel);
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::MisplacedSingleLevel);
        }
    }
    Ok(())
}

/// A subscription filter as written by the client: plain, or shared (`$share/{group}/{filter}`,
/// MQTT 5 §4.8.2; also accepted from 3.1.1 clients, as EMQX and Mosquitto do).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FilterSpec {
    pub group: Option<String>,
    pub filter: String,
}

impl FilterSpec {
    pub fn parse(raw: &str) -> Result<Self, TopicError> {
        let Some(rest) = raw.strip_prefix("$share/") else {
            validate_filter(raw)?;
            return Ok(Self {
                group: None,
                filter: raw.to_owned(),
            });
        };
        let (group, filter) = rest.split_once('/').ok_or(TopicError::BadShare)?;
        if group.is_empty() || group.contains(['+', '#']) {
            return Err(TopicError::BadShare);
        }
        validate_filter(filter)?;
        Ok(Self {
            group: Some(group.to_owned()),
            filter: filter.to_owned(),
        })
    }
}

/// Whether `filter` matches `topic`. Topics starting with `$` are not matched by a filter that
/// starts with a wildcard (§4.7.2).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Subscriptions indexed by filter level, so a publish is matched by walking the tree once
/// along its topic instead of testing every filter. `K` identifies a subscriber (one entry per
/// subscriber per filter), `V` is what the subscription carries.
#[derive(Debug)]
pub struct SubscriptionTree<K, V> {
    root: Node<K, V>,
    len: usize,
}

#[derive(Debug)]
struct Node<K, V> {
    /// By level name, hashed with a seeded fast hash: every publish looks up each of its
    /// topic's levels here, and `+` and `#` besides.
    children: HashMap<String, Node<K, V>, foldhash::fast::RandomState>,
    /// Plain subscriptions whose filter ends at this node.
    plain: HashMap<K, V>,
    /// Shared subscriptions ending here: group → members.
    shared: HashMap<String, HashMap<K, V>>,
    /// Whether `children` holds `#` / `+`: most nodes have neither, and a publish would
    /// otherwise look both up at every level of its topic.
    has_hash: bool,
    has_plus: bool,
}

impl<K, V> Default for Node<K, V> {
    fn default() -> Self {
        Self {
            children: HashMap::default(),
            plain: HashMap::new(),
            shared: HashMap::new(),
            has_hash: false,
            has_plus: false,
        }
    }
}

impl<K, V> Node<K, V> {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.plain.is_empty() && self.shared.is_empty()
    }

    /// Notes whether the child for `level` (a wildcard or not) is there.
    fn mark(&mut self, level: &str, present: bool) {
        match level {
            "#" => self.has_hash = present,
            "+" => self.has_plus = present,
            _ => {}
        }
    }
}

impl<K, V> Default for SubscriptionTree<K, V> {
    fn default() -> Self {
        Self {
            root: Node::default(),
            len: 0,
        }
    }
}

/// What matched one published topic.
#[derive(Debug)]
pub struct Matches<'a, K, V> {
    pub plain: Vec<(&'a K, &'a V)>,
    /// One entry per matching (filter, group): all of its members; the caller picks one.
    pub shared: Vec<(&'a str, &'a HashMap<K, V>)>,
}

impl<K: std::hash::Hash + Eq + Clone, V> SubscriptionTree<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of (subscriber, filter) entries.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds or replaces a subscription; returns the value it replaced.
    pub fn insert(&mut self, spec: &FilterSpec, key: K, value: V) -> Option<V> {
        let mut node = &mut self.root;
        for level in spec.filter.split('/') {
            node.mark(level, true);
            node = node.children.entry(level.to_owned()).or_default();
        }
        let slot = match &spec.group {
            None => &mut node.plain,
            Some(g) => node.shared.entry(g.clone()).or_default(),
        };
        let old = slot.insert(key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes a subscription; returns its value if it existed.
    pub fn remove(&mut self, spec: &FilterSpec, key: &K) -> Option<V> {
        let levels: Vec<&str> = spec.filter.split('/').collect();
        let removed = Self::remove_at(&mut self.root, &levels, spec.group.as_deref(), key);
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    fn remove_at(
        node: &mut Node<K, V>,
        levels: &[&str],
        group: Option<&str>,
        key: &K,
    ) -> Option<V> {
        let Some((first, rest)) = levels.split_first() else {
            return match group {
                None => node.plain.remove(key),
                Some(g) => {
                    let members = node.shared.get_mut(g)?;
                    let v = members.remove(key);
                    if members.is_empty() {
                        node.shared.remove(g);
                    }
                    v
                }
            };
        };
        let child = node.children.get_mut(*first)?;
        let v = Self::remove_at(child, rest, group, key);
        if child.is_empty() {
            node.children.remove(*first);
            node.mark(first, false);
        }
        v
    }

    /// Every subscription whose filter matches `topic`.
    pub fn matches<'a>(&'a self, topic: &str) -> Matches<'a, K, V> {
        let mut out = Matches {
            plain: Vec::new(),
            shared: Vec::new(),
        };
        let dollar = topic.starts_with('$');
        Self::collect(&self.root, Some(topic), 0, dollar, &mut out);
        out
    }

    /// `rest`: the topic's levels below `node`, still joined by `/`; `None` past the last.
    fn collect<'a>(
        node: &'a Node<K, V>,
        rest: Option<&str>,
        depth: usize,
        dollar: bool,
        out: &mut Matches<'a, K, V>,
    ) {
        // `#` also matches the parent level ("a/#" matches "a"), but a leading wildcard never
        // matches a `$` topic.
        let wildcards_allowed = !(dollar && depth == 0);
        if wildcards_allowed
            && node.has_hash
            && let Some(hash) = node.children.get("#")
        {
            Self::take(hash, out);
        }
        let Some(rest) = rest else {
            Self::take(node, out);
            return;
        };
        let (level, rest) = match rest.split_once('/') {
            Some((level, rest)) => (level, Some(rest)),
            None => (rest, None),
        };
        if let Some(child) = node.children.get(level) {
            Self::collect(child, rest, depth + 1, dollar, out);
        }
        if wildcards_allowed
            && node.has_plus
            && let Some(plus) = node.children.get("+")
        {
            Self::collect(plus, rest, depth + 1, dollar, out);
        }
    }

    fn take<'a>(node: &'a Node<K, V>, out: &mut Matches<'a, K, V>) {
        out.plain.extend(node.plain.iter());
        out.shared
            .extend(node.shared.iter().map(|(g, m)| (g.as_str(), m)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> FilterSpec {
        FilterSpec::parse(s).unwrap()
    }

    /// Asserts that `tree`, holding exactly `filters` (each keyed by itself), matches each of
    /// `topics` to the filters the one-filter reference matcher accepts.
    fn agrees_with_the_reference(
        tree: &SubscriptionTree<String, ()>,
        filters: &[&str],
        topics: &[&str],
    ) {
        for t in topics {
            let mut expected: Vec<String> = filters
                .iter()
                .filter(|f| matches(f, t))
                .map(|f| f.to_string())
                .collect();
            expected.sort();
            assert_eq!(matched(tree, t), expected, "topic {t:?} with {filters:?}");
        }
    }

    fn matched(tree: &SubscriptionTree<String, ()>, topic: &str) -> Vec<String> {
        let mut v: Vec<String> = tree
            .matches(topic)
            .plain
            .into_iter()
            .map(|(k, _)| k.clone())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn names_reject_wildcards_and_empty() {
        assert_eq!(validate_name(""), Err(TopicError::Empty));
        assert_eq!(validate_name("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(validate_name("a/#"), Err(TopicError::WildcardInName));
        assert!(validate_name("/a//b/").is_ok());
    }

    #[test]
    fn filters_need_whole_level_wildcards() {
        assert!(validate_filter("#").is_ok());
        assert!(validate_filter("a/+/b/#").is_ok());
        assert!(validate_filter("+").is_ok());
        assert_eq!(
            validate_filter("a/#/b"),
            Err(TopicError::MisplacedMultiLevel)
        );
        assert_eq!(validate_filter("a#"), Err(TopicError::MisplacedMultiLevel));
        assert_eq!(
            validate_filter("a/b+"),
            Err(TopicError::MisplacedSingleLevel)
        );
    }

    #[test]
    fn shared_filters_parse_group_and_filter() {
        let s = spec("$share/g1/a/+");
        assert_eq!(s.group.as_deref(), Some("g1"));
        assert_eq!(s.filter, "a/+");
        assert_eq!(FilterSpec::parse("$share/g1"), Err(TopicError::BadShare));
        assert_eq!(FilterSpec::parse("$share//a"), Err(TopicError::BadShare));
        assert_eq!(FilterSpec::parse("$share/g+/a"), Err(TopicError::BadShare));
    }

    #[test]
    fn matching_follows_the_spec_examples() {
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking"
        ));
        assert!(matches("sport/#", "sport"));
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS/monitor/Clients"));
    }

    #[test]
    fn tree_matches_like_the_reference_matcher() {
        let filters = [
            "#", "+", "a", "a/b", "a/+", "a/#", "+/b", "+/+", "/+", "a/b/c", "$SYS/#", "+/b/#",
            "a//b",
        ];
        let topics = [
            "a", "a/b", "a/b/c", "/b", "b", "$SYS/x", "$SYS", "a//b", "", "/",
        ];
        let mut tree = SubscriptionTree::new();
        for f in filters {
            tree.insert(&spec(f), f.to_owned(), ());
        }
        agrees_with_the_reference(&tree, &filters, &topics);
    }

    /// Removals (and a re-insert) leave the tree matching exactly the filters still in it,
    /// wildcards included: the tree skips wildcard lookups at nodes it believes have none.
    #[test]
    fn the_tree_matches_its_remaining_filters_as_they_are_removed() {
        let filters = ["a/+", "a/#", "a/b", "+/b", "#", "a/+/c", "+", "a/b/#"];
        let topics = ["a", "a/b", "a/b/c", "b/b", "x"];
        let mut tree = SubscriptionTree::new();
        for f in filters {
            tree.insert(&spec(f), f.to_owned(), ());
        }
        let mut left = filters.to_vec();
        for f in ["a/#", "+", "a/+", "#"] {
            assert_eq!(tree.remove(&spec(f), &f.to_owned()), Some(()));
            left.retain(|l| *l != f);
            agrees_with_the_reference(&tree, &left, &topics);
        }
        tree.insert(&spec("a/+"), "a/+".to_owned(), ());
        left.push("a/+");
        agrees_with_the_reference(&tree, &left, &topics);
    }

    #[test]
    fn removing_prunes_empty_branches() {
        let mut tree = SubscriptionTree::new();
        tree.insert(&spec("a/b/c"), "k".to_owned(), ());
        tree.insert(&spec("$share/g/a/b/c"), "k".to_owned(), ());
        assert_eq!(tree.len(), 2);
        assert_eq!(tree.remove(&spec("a/b/c"), &"k".to_owned()), Some(()));
        assert_eq!(
            tree.remove(&spec("$share/g/a/b/c"), &"k".to_owned()),
            Some(())
        );
        assert_eq!(tree.remove(&spec("a/b/c"), &"k".to_owned()), None);
        assert!(tree.is_empty());
        assert!(tree.root.is_empty());
    }

    #[test]
    fn shared_members_are_grouped_per_filter() {
        let mut tree = SubscriptionTree::new();
        tree.insert(&spec("$share/g/a/+"), "m1".to_owned(), 1);
        tree.insert(&spec("$share/g/a/+"), "m2".to_owned(), 2);
        tree.insert(&spec("$share/h/a/#"), "m3".to_owned(), 3);
        let m = tree.matches("a/x");
        assert!(m.plain.is_empty());
        let mut groups: Vec<(&str, usize)> = m
            .shared
            .iter()
            .map(|(g, members)| (*g, members.len()))
            .collect();
        groups.sort();
        assert_eq!(groups, vec![("g", 2), ("h", 1)]);
    }
}
