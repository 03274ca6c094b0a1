//! Exchanges, bindings, and the per-exchange index that routes one message.

use std::collections::HashMap;
use std::fmt;

use amq_protocol::types::{AMQPValue, FieldTable};

use super::error::ModelError;
use super::headers::HeadersMatch;
use super::topic::TopicTrie;

/// The exchange types of 0-9-1 (§3.1.3): direct, fanout, topic and headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
    Headers,
}

impl ExchangeKind {
    /// Parses the `type` of `exchange.declare`; anything else is 503 COMMAND_INVALID.
    pub fn parse(kind: &str) -> Result<Self, ModelError> {
        match kind {
            "direct" => Ok(Self::Direct),
            "fanout" => Ok(Self::Fanout),
            "topic" => Ok(Self::Topic),
            "headers" => Ok(Self::Headers),
            other => Err(ModelError::UnknownExchangeType {
                kind: other.to_owned(),
            }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Fanout => "fanout",
            Self::Topic => "topic",
            Self::Headers => "headers",
        }
    }
}

impl fmt::Display for ExchangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a binding delivers: a queue, or another exchange (RabbitMQ's exchange-to-exchange
/// bindings, `exchange.bind`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Destination {
    Queue(String),
    Exchange(String),
}

/// An exchange as declared.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    pub name: String,
    pub kind: ExchangeKind,
    pub durable: bool,
    /// Deleted when its last binding (as a source) is removed.
    pub auto_delete: bool,
    /// Reachable only through exchange-to-exchange bindings, not by publishing.
    pub internal: bool,
    pub arguments: FieldTable,
}

impl Exchange {
    /// A durable, non-internal, non-auto-delete exchange without arguments.
    pub fn new(name: &str, kind: ExchangeKind) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            durable: true,
            auto_delete: false,
            internal: false,
            arguments: FieldTable::default(),
        }
    }

    /// RabbitMQ's `alternate-exchange` argument: where messages go that this exchange cannot
    /// route.
    pub fn alternate_exchange(&self) -> Option<String> {
        match self.arguments.inner().get("alternate-exchange")? {
            AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec()).ok(),
            AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
            _ => None,
        }
    }
}

/// A binding from an exchange to a destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    pub source: String,
    pub destination: Destination,
    pub routing_key: String,
    pub arguments: FieldTable,
}

impl Binding {
    /// A binding from `source` to `queue` without arguments.
    pub fn to_queue(source: &str, queue: &str, routing_key: &str) -> Self {
        Self {
            source: source.to_owned(),
            destination: Destination::Queue(queue.to_owned()),
            routing_key: routing_key.to_owned(),
            arguments: FieldTable::default(),
        }
    }

    /// A binding from `source` to the exchange `destination` without arguments.
    pub fn to_exchange(source: &str, destination: &str, routing_key: &str) -> Self {
        Self {
            source: source.to_owned(),
            destination: Destination::Exchange(destination.to_owned()),
            routing_key: routing_key.to_owned(),
            arguments: FieldTable::default(),
        }
    }
}

/// A binding as an exchange stores it: identity is (destination, key, arguments), as in
/// RabbitMQ, so two bindings differing only in arguments coexist.
#[derive(Debug, Clone)]
struct Bound {
    destination: Destination,
    routing_key: String,
    arguments: FieldTable,
    headers: Option<HeadersMatch>,
}

/// The bindings of one exchange, indexed for its type.
#[derive(Debug, Clone)]
pub(crate) struct BindingIndex {
    kind: ExchangeKind,
    bound: Vec<Bound>,
    direct: HashMap<String, Vec<Destination>>,
    topic: TopicTrie<Destination>,
}

impl BindingIndex {
    pub(crate) fn new(kind: ExchangeKind) -> Self {
        Self {
            kind,
            bound: Vec::new(),
            direct: HashMap::new(),
            topic: TopicTrie::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.bound.len()
    }

    fn position(&self, destination: &Destination, key: &str, args: &FieldTable) -> Option<usize> {
        self.bound.iter().position(|b| {
            &b.destination == destination && b.routing_key == key && &b.arguments == args
        })
    }

    /// Adds a binding; `Ok(false)` when the same binding already exists.
    pub(crate) fn add(
        &mut self,
        destination: Destination,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> Result<bool, ModelError> {
        if self
            .position(&destination, routing_key, arguments)
            .is_some()
        {
            return Ok(false);
        }
        let headers = match self.kind {
            ExchangeKind::Headers => Some(HeadersMatch::from_arguments(arguments)?),
            _ => None,
        };
        match self.kind {
            ExchangeKind::Direct => self
                .direct
                .entry(routing_key.to_owned())
                .or_default()
                .push(destination.clone()),
            ExchangeKind::Topic => self.topic.insert(routing_key, destination.clone()),
            ExchangeKind::Fanout | ExchangeKind::Headers => {}
        }
        self.bound.push(Bound {
            destination,
            routing_key: routing_key.to_owned(),
            arguments: arguments.clone(),
            headers,
        });
        Ok(true)
    }

    /// Removes a binding; `false` when there was none.
    pub(crate) fn remove(
        &mut self,
        destination: &Destination,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> bool {
        let Some(at) = self.position(destination, routing_key, arguments) else {
            return false;
        };
        let bound = self.bound.remove(at);
        self.unindex(&bound);
        true
    }

    /// Removes every binding to `destination`, returning how many there were.
    pub(crate) fn remove_destination(&mut self, destination: &Destination) -> usize {
        let (gone, kept): (Vec<Bound>, Vec<Bound>) = std::mem::take(&mut self.bound)
            .into_iter()
            .partition(|b| &b.destination == destination);
        self.bound = kept;
        for bound in &gone {
            self.unindex(bound);
        }
        gone.len()
    }

    fn unindex(&mut self, bound: &Bound) {
        match self.kind {
            ExchangeKind::Direct => {
                if let Some(list) = self.direct.get_mut(&bound.routing_key) {
                    if let Some(at) = list.iter().position(|d| d == &bound.destination) {
                        list.remove(at);
                    }
                    if list.is_empty() {
                        self.direct.remove(&bound.routing_key);
                    }
                }
            }
            ExchangeKind::Topic => {
                self.topic.remove(&bound.routing_key, &bound.destination);
            }
            ExchangeKind::Fanout | ExchangeKind::Headers => {}
        }
    }

    /// The destinations this exchange alone routes a message to (possibly with repeats).
    pub(crate) fn route(
        &self,
        routing_key: &str,
        headers: Option<&FieldTable>,
    ) -> Vec<Destination> {
        match self.kind {
            ExchangeKind::Direct => self.direct.get(routing_key).cloned().unwrap_or_default(),
            ExchangeKind::Fanout => self.bound.iter().map(|b| b.destination.clone()).collect(),
            ExchangeKind::Topic => self.topic.matches(routing_key),
            ExchangeKind::Headers => self
                .bound
                .iter()
                .filter(|b| b.headers.as_ref().is_some_and(|m| m.matches(headers)))
                .map(|b| b.destination.clone())
                .collect(),
        }
    }

    /// The bindings, for listing.
    pub(crate) fn bindings<'a>(&'a self, source: &'a str) -> impl Iterator<Item = Binding> + 'a {
        self.bound.iter().map(move |b| Binding {
            source: source.to_owned(),
            destination: b.destination.clone(),
            routing_key: b.routing_key.clone(),
            arguments: b.arguments.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: &str) -> Destination {
        Destination::Queue(name.into())
    }

    #[test]
    fn exchange_types_parse_and_unknown_ones_are_command_invalid() {
        assert_eq!(ExchangeKind::parse("topic"), Ok(ExchangeKind::Topic));
        assert_eq!(
            ExchangeKind::parse("x-delayed-message")
                .unwrap_err()
                .reply_code()
                .code(),
            503
        );
    }

    #[test]
    fn direct_routes_on_exact_key() {
        let mut idx = BindingIndex::new(ExchangeKind::Direct);
        idx.add(q("a"), "k", &FieldTable::default()).unwrap();
        assert_eq!(idx.route("k", None), vec![q("a")]);
        assert!(idx.route("k2", None).is_empty());
    }

    #[test]
    fn fanout_ignores_the_key() {
        let mut idx = BindingIndex::new(ExchangeKind::Fanout);
        idx.add(q("a"), "", &FieldTable::default()).unwrap();
        idx.add(q("b"), "whatever", &FieldTable::default()).unwrap();
        assert_eq!(idx.route("x", None), vec![q("a"), q("b")]);
    }

    #[test]
    fn same_binding_twice_is_stored_once() {
        let mut idx = BindingIndex::new(ExchangeKind::Direct);
        assert_eq!(idx.add(q("a"), "k", &FieldTable::default()), Ok(true));
        assert_eq!(idx.add(q("a"), "k", &FieldTable::default()), Ok(false));
        assert_eq!(idx.len(), 1);
    }

    #[test]
    fn bindings_differing_in_arguments_are_distinct_and_removed_one_by_one() {
        let mut idx = BindingIndex::new(ExchangeKind::Direct);
        let mut args = FieldTable::default();
        args.insert("tag".into(), AMQPValue::LongInt(1));
        idx.add(q("a"), "k", &FieldTable::default()).unwrap();
        idx.add(q("a"), "k", &args).unwrap();
        assert_eq!(idx.len(), 2);
        assert!(idx.remove(&q("a"), "k", &args));
        assert_eq!(idx.route("k", None), vec![q("a")]);
        assert!(idx.remove(&q("a"), "k", &FieldTable::default()));
        assert!(idx.route("k", None).is_empty());
        assert!(!idx.remove(&q("a"), "k", &FieldTable::default()));
    }

    #[test]
    fn removing_a_destination_drops_all_its_bindings() {
        let mut idx = BindingIndex::new(ExchangeKind::Topic);
        idx.add(q("a"), "x.*", &FieldTable::default()).unwrap();
        idx.add(q("a"), "#", &FieldTable::default()).unwrap();
        idx.add(q("b"), "#", &FieldTable::default()).unwrap();
        assert_eq!(idx.remove_destination(&q("a")), 2);
        assert_eq!(idx.route("x.y", None), vec![q("b")]);
    }

    #[test]
    fn headers_binding_with_bad_x_match_is_not_added() {
        let mut idx = BindingIndex::new(ExchangeKind::Headers);
        let mut args = FieldTable::default();
        args.insert("x-match".into(), AMQPValue::LongString("most".into()));
        assert!(idx.add(q("a"), "", &args).is_err());
        assert_eq!(idx.len(), 0);
    }
}
