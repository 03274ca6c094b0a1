//! Topic-exchange matching over a trie of binding-key words.
//!
//! Routing keys and binding keys are words separated by `.`; in a binding key `*` matches
//! exactly one word and `#` zero or more (spec, `exchange` class, "topic" exchange type).
//! Splitting follows RabbitMQ: the empty key has *zero* words (so `#` matches it and `*` does
//! not), and `"a."` has two words, `"a"` and `""`.
//!
//! A trie keeps routing cost proportional to the key's length and the patterns that can still
//! match, not to the number of bindings. Matching is iterative with a visited set over
//! (node, position), so `#` cannot blow up combinatorially and a long key (an MQTT topic may
//! have thousands of levels) cannot exhaust the stack. Runs of `#` are collapsed on insert
//! (`#.#` ≡ `#`).

use std::collections::{HashMap, HashSet};

/// A trie from binding patterns to values (bindings' destinations).
#[derive(Debug, Clone)]
pub struct TopicTrie<T> {
    root: Node<T>,
    len: usize,
}

#[derive(Debug, Clone)]
struct Node<T> {
    words: HashMap<String, Node<T>>,
    star: Option<Box<Node<T>>>,
    hash: Option<Box<Node<T>>>,
    values: Vec<T>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Self {
            words: HashMap::new(),
            star: None,
            hash: None,
            values: Vec::new(),
        }
    }
}

impl<T> Node<T> {
    fn is_empty(&self) -> bool {
        self.values.is_empty()
            && self.words.is_empty()
            && self.star.is_none()
            && self.hash.is_none()
    }

    fn child_mut(&mut self, word: &str) -> &mut Node<T> {
        match word {
            "*" => self.star.get_or_insert_with(Box::default),
            "#" => self.hash.get_or_insert_with(Box::default),
            _ => self.words.entry(word.to_owned()).or_default(),
        }
    }
}

/// Splits a key into words the way RabbitMQ does: `""` has no words.
pub fn split_words(key: &str) -> Vec<&str> {
    if key.is_empty() {
        Vec::new()
    } else {
        key.split('.').collect()
    }
}

/// Pattern words with runs of `#` collapsed into one.
fn normalized_pattern(pattern: &str) -> Vec<&str> {
    let mut words: Vec<&str> = Vec::new();
    for word in split_words(pattern) {
        if word == "#" && words.last() == Some(&"#") {
            continue;
        }
        words.push(word);
    }
    words
}

impl<T> Default for TopicTrie<T> {
    fn default() -> Self {
        Self {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<T: PartialEq + Clone> TopicTrie<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of (pattern, value) entries.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `value` under `pattern`. The same pair may be added more than once (two bindings
    /// differing only in arguments); each `remove` takes one away.
    pub fn insert(&mut self, pattern: &str, value: T) {
        let mut node = &mut self.root;
        for word in normalized_pattern(pattern) {
            node = node.child_mut(word);
        }
        node.values.push(value);
        self.len += 1;
    }

    /// Removes one `value` under `pattern`, pruning emptied branches. Returns whether it was
    /// there.
    pub fn remove(&mut self, pattern: &str, value: &T) -> bool {
        let words = normalized_pattern(pattern);
        let removed = remove_at(&mut self.root, &words, value);
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Values of every pattern matching `routing_key`, each pattern's values once, in no
    /// particular order (callers de-duplicate destinations anyway).
    pub fn matches(&self, routing_key: &str) -> Vec<T> {
        let words = split_words(routing_key);
        let mut out = Vec::new();
        let mut visited: HashSet<(*const Node<T>, usize)> = HashSet::new();
        let mut stack: Vec<(&Node<T>, usize)> = vec![(&self.root, 0)];
        while let Some((node, i)) = stack.pop() {
            if !visited.insert((node as *const Node<T>, i)) {
                continue;
            }
            if let Some(hash) = &node.hash {
                // `#` swallows zero or more words: try every remaining suffix.
                for j in i..=words.len() {
                    stack.push((hash, j));
                }
            }
            match words.get(i) {
                None => out.extend(node.values.iter().cloned()),
                Some(word) => {
                    if let Some(child) = node.words.get(*word) {
                        stack.push((child, i + 1));
                    }
                    if let Some(star) = &node.star {
                        stack.push((star, i + 1));
                    }
                }
            }
        }
        out
    }
}

/// Recursion depth is bounded by the pattern's word count; a binding key is a short string
/// (≤ 255 bytes, so ≤ 128 words).
fn remove_at<T: PartialEq>(node: &mut Node<T>, words: &[&str], value: &T) -> bool {
    let Some((first, rest)) = words.split_first() else {
        return match node.values.iter().position(|v| v == value) {
            Some(at) => {
                node.values.remove(at);
                true
            }
            None => false,
        };
    };
    match *first {
        "*" | "#" => {
            let slot = if *first == "*" {
                &mut node.star
            } else {
                &mut node.hash
            };
            let Some(child) = slot.as_mut() else {
                return false;
            };
            let removed = remove_at(child, rest, value);
            if child.is_empty() {
                *slot = None;
            }
            removed
        }
        word => {
            let Some(child) = node.words.get_mut(word) else {
                return false;
            };
            let removed = remove_at(child, rest, value);
            if child.is_empty() {
                node.words.remove(word);
            }
            removed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn matches(pattern: &str, key: &str) -> bool {
        let mut trie = TopicTrie::new();
        trie.insert(pattern, 1u32);
        !trie.matches(key).is_empty()
    }

    #[test]
    fn literal_pattern_matches_only_the_same_key() {
        assert!(matches("a.b", "a.b"));
        assert!(!matches("a.b", "a.b.c"));
        assert!(!matches("a.b", "a"));
    }

    #[test]
    fn star_matches_exactly_one_word() {
        assert!(matches("a.*", "a.b"));
        assert!(!matches("a.*", "a"));
        assert!(!matches("a.*", "a.b.c"));
        assert!(matches("*.b", "a.b"));
    }

    #[test]
    fn hash_alone_matches_every_key_including_the_empty_one() {
        for key in ["", "a", "a.b.c", ".", "a..b"] {
            assert!(matches("#", key), "{key:?}");
        }
    }

    #[test]
    fn hash_between_words_matches_zero_or_more_words() {
        assert!(matches("a.#.b", "a.b"));
        assert!(matches("a.#.b", "a.x.b"));
        assert!(matches("a.#.b", "a.x.y.z.b"));
        assert!(!matches("a.#.b", "a.x.c"));
        assert!(!matches("a.#.b", "b.a.b"));
    }

    #[test]
    fn trailing_hash_matches_the_prefix_itself() {
        assert!(matches("a.#", "a"));
        assert!(matches("a.#", "a.b.c"));
        assert!(!matches("a.#", "b"));
    }

    #[test]
    fn empty_routing_key_has_no_words() {
        assert!(matches("", ""));
        assert!(!matches("*", ""));
        assert!(!matches("", "a"));
    }

    #[test]
    fn empty_words_are_words() {
        assert!(matches("*", "a"));
        assert!(!matches("*", "."), "'.' is two empty words");
        assert!(matches("*.*", "."));
        assert!(matches("a..b", "a..b"));
        assert!(matches("a.*.b", "a..b"));
        assert!(matches("a.", "a."));
        assert!(!matches("a", "a."));
    }

    #[test]
    fn star_and_hash_combine() {
        assert!(matches("*.#", "a"));
        assert!(!matches("*.#", ""));
        assert!(matches("#.*", "a.b"));
        assert!(matches("#.*.#", "x"));
        assert!(!matches("#.*.#", ""));
    }

    #[test]
    fn wildcards_inside_words_are_literal() {
        assert!(matches("a*.b", "a*.b"));
        assert!(!matches("a*.b", "ab.b"));
    }

    #[test]
    fn runs_of_hashes_behave_like_one() {
        assert!(matches("#.#.#", ""));
        assert!(matches("a.#.#.b", "a.b"));
        assert!(matches("a.#.#.b", "a.x.y.b"));
    }

    #[test]
    fn every_matching_binding_is_returned_once_per_entry() {
        let mut trie = TopicTrie::new();
        trie.insert("a.*", "q1");
        trie.insert("#", "q2");
        trie.insert("a.b", "q3");
        trie.insert("b.*", "q4");
        trie.insert("#.b", "q5");
        let mut got = trie.matches("a.b");
        got.sort();
        assert_eq!(got, vec!["q1", "q2", "q3", "q5"]);
    }

    #[test]
    fn remove_takes_away_one_entry_and_prunes() {
        let mut trie = TopicTrie::new();
        trie.insert("a.#.b", 1);
        trie.insert("a.#.b", 1);
        assert_eq!(trie.len(), 2);
        assert!(trie.remove("a.#.b", &1));
        assert_eq!(trie.matches("a.b"), vec![1]);
        assert!(
            trie.remove("a.#.#.b", &1),
            "patterns normalise the same way"
        );
        assert!(trie.matches("a.b").is_empty());
        assert!(!trie.remove("a.#.b", &1));
        assert!(trie.root.is_empty(), "branches pruned");
        assert!(trie.is_empty());
    }

    #[test]
    fn pathological_hash_patterns_stay_fast() {
        let mut trie = TopicTrie::new();
        trie.insert("#.a.#.a.#.a.#.a.#.a.#.b", 1);
        let key = vec!["a"; 200].join(".");
        assert!(trie.matches(&key).is_empty());
    }

    #[test]
    fn very_long_keys_do_not_exhaust_the_stack() {
        let mut trie = TopicTrie::new();
        trie.insert("#.end", 1);
        let key = format!("{}.end", vec!["x"; 50_000].join("."));
        assert_eq!(trie.matches(&key), vec![1]);
    }

    /// A direct recursive matcher, straight from the definition, to check the trie against.
    fn reference(pattern: &[&str], key: &[&str]) -> bool {
        match pattern.split_first() {
            None => key.is_empty(),
            Some((&"#", rest)) => (0..=key.len()).any(|i| reference(rest, &key[i..])),
            Some((&"*", rest)) => !key.is_empty() && reference(rest, &key[1..]),
            Some((word, rest)) => key.first() == Some(word) && reference(rest, &key[1..]),
        }
    }

    fn words(max: usize) -> impl Strategy<Value = String> {
        let words: &'static [&str] = &["a", "b", "", "*", "#"];
        proptest::collection::vec(proptest::sample::select(words), 0..max).prop_map(|w| w.join("."))
    }

    proptest! {
        #[test]
        fn trie_agrees_with_the_definition(pattern in words(6), key in words(6)) {
            let key = key.replace(['*', '#'], "c");
            let expected = reference(&split_words(&pattern), &split_words(&key));
            prop_assert_eq!(matches(&pattern, &key), expected, "{:?} vs {:?}", pattern, key);
        }
    }
}
