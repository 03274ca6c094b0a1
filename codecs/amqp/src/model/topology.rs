//! The exchanges, queue names and bindings of one virtual host, and routing over them.
//!
//! Pure and deterministic, so that it can later be the state a Raft log replays. Queue
//! *contents* live in [`crate::queue`]; here a queue is a name that bindings can point to and
//! that the default exchange reaches.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use amq_protocol::types::FieldTable;

use super::error::ModelError;
use super::exchange::{Binding, BindingIndex, Destination, Exchange, ExchangeKind};

/// The exchanges the spec has every virtual host predeclare: the nameless default exchange and
/// one `amq.<type>` per exchange type (§3.1.3), plus `amq.match`, RabbitMQ's second headers
/// exchange.
const PREDECLARED: [(&str, ExchangeKind); 6] = [
    ("", ExchangeKind::Direct),
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
    ("amq.headers", ExchangeKind::Headers),
    ("amq.match", ExchangeKind::Headers),
];

/// Outcome of `exchange.declare`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declared {
    Created,
    /// It existed with equivalent properties (or the declare was passive).
    Existing,
}

#[derive(Debug, Clone)]
struct Entry {
    exchange: Exchange,
    index: BindingIndex,
}

/// Exchanges, queues and bindings.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Looked up for every publish (foldhash: SipHash was the larger part of a lookup).
    exchanges: HashMap<String, Entry, foldhash::fast::RandomState>,
    queues: BTreeSet<String>,
}

impl Default for Topology {
    fn default() -> Self {
        Self::new()
    }
}

impl Topology {
    /// A topology with the predeclared exchanges and no queues.
    pub fn new() -> Self {
        let exchanges = PREDECLARED
            .iter()
            .map(|(name, kind)| {
                let entry = Entry {
                    exchange: Exchange::new(name, *kind),
                    index: BindingIndex::new(*kind),
                };
                ((*name).to_owned(), entry)
            })
            .collect();
        Self {
            exchanges,
            queues: BTreeSet::new(),
        }
    }

    pub fn exchange(&self, name: &str) -> Option<&Exchange> {
        self.exchanges.get(name).map(|e| &e.exchange)
    }

    pub fn exchanges(&self) -> impl Iterator<Item = &Exchange> {
        self.exchanges.values().map(|e| &e.exchange)
    }

    /// `exchange.declare`. Passive: only check that it exists (404 otherwise). Active: create
    /// it, or check that the existing one is equivalent (406 otherwise). `amq.*` names cannot
    /// be created and the default exchange cannot be declared (403).
    pub fn declare_exchange(
        &mut self,
        exchange: Exchange,
        passive: bool,
    ) -> Result<Declared, ModelError> {
        if passive {
            return match self.exchanges.contains_key(&exchange.name) {
                true => Ok(Declared::Existing),
                false => Err(ModelError::ExchangeNotFound {
                    name: exchange.name,
                }),
            };
        }
        if exchange.name.is_empty() {
            return Err(ModelError::DefaultExchange);
        }
        if let Some(current) = self.exchanges.get(&exchange.name) {
            check_equivalent(&current.exchange, &exchange)?;
            return Ok(Declared::Existing);
        }
        if exchange.name.starts_with("amq.") {
            return Err(ModelError::ReservedName {
                name: exchange.name,
            });
        }
        let entry = Entry {
            index: BindingIndex::new(exchange.kind),
            exchange,
        };
        self.exchanges.insert(entry.exchange.name.clone(), entry);
        Ok(Declared::Created)
    }

    /// `exchange.delete`. Returns whether it existed (RabbitMQ answers delete-ok either way).
    /// Bindings from and to it go too, and auto-delete exchanges left without bindings with
    /// them.
    pub fn delete_exchange(&mut self, name: &str, if_unused: bool) -> Result<bool, ModelError> {
        if name.is_empty() {
            return Err(ModelError::DefaultExchange);
        }
        if name.starts_with("amq.") {
            return Err(ModelError::ReservedName {
                name: name.to_owned(),
            });
        }
        let Some(entry) = self.exchanges.get(name) else {
            return Ok(false);
        };
        if if_unused && entry.index.len() > 0 {
            return Err(ModelError::InUse {
                name: name.to_owned(),
            });
        }
        self.remove_exchange_cascade(name);
        Ok(true)
    }

    /// Registers a queue name: bindings may now point to it and the default exchange reaches
    /// it. Returns whether it is new.
    pub fn add_queue(&mut self, name: &str) -> bool {
        self.queues.insert(name.to_owned())
    }

    pub fn has_queue(&self, name: &str) -> bool {
        self.queues.contains(name)
    }

    /// Forgets a queue and its bindings. Returns the auto-delete exchanges that lost their last
    /// binding and were deleted.
    pub fn remove_queue(&mut self, name: &str) -> Vec<String> {
        self.queues.remove(name);
        self.remove_destination(&Destination::Queue(name.to_owned()))
    }

    /// `queue.bind` / `exchange.bind`. `Ok(false)` when the binding already existed.
    pub fn bind(&mut self, binding: Binding) -> Result<bool, ModelError> {
        self.check_binding_ends(&binding)?;
        let entry = self.entry_mut(&binding.source)?;
        entry.index.add(
            binding.destination,
            &binding.routing_key,
            &binding.arguments,
        )
    }

    /// `queue.unbind` / `exchange.unbind`. Removing a binding that does not exist is not an
    /// error (RabbitMQ answers unbind-ok). Returns the auto-delete exchanges deleted as a
    /// consequence.
    pub fn unbind(&mut self, binding: &Binding) -> Result<Vec<String>, ModelError> {
        self.check_binding_ends(binding)?;
        let entry = self.entry_mut(&binding.source)?;
        let removed = entry.index.remove(
            &binding.destination,
            &binding.routing_key,
            &binding.arguments,
        );
        if removed && entry.exchange.auto_delete && entry.index.len() == 0 {
            let name = binding.source.clone();
            let mut deleted = vec![name.clone()];
            deleted.extend(self.remove_exchange_cascade(&name));
            return Ok(dedup(deleted));
        }
        Ok(Vec::new())
    }

    /// The bindings whose source is `exchange`.
    pub fn bindings_from(&self, exchange: &str) -> Vec<Binding> {
        self.exchanges
            .get(exchange)
            .map(|e| e.index.bindings(exchange).collect())
            .unwrap_or_default()
    }

    /// Routes a message published to `exchange`: the queues it reaches, each once, in the
    /// order first reached. Exchange-to-exchange bindings are followed (each exchange visited
    /// at most once, so cycles terminate), and an exchange that matches nothing hands the
    /// message to its `alternate-exchange` if it has one. An empty result means unroutable
    /// (`basic.return` if mandatory).
    ///
    /// The default exchange `""` routes to the queue named by the routing key: every queue is
    /// implicitly bound to it by its name (§3.1.3.1).
    /// Publishing to a missing exchange is 404, to an internal one 403.
    pub fn route(
        &self,
        exchange: &str,
        routing_key: &str,
        headers: Option<&FieldTable>,
    ) -> Result<Vec<Destination>, ModelError> {
        let entry = self
            .exchanges
            .get(exchange)
            .ok_or_else(|| ModelError::ExchangeNotFound {
                name: exchange.to_owned(),
            })?;
        if entry.exchange.internal {
            return Err(ModelError::InternalExchange {
                name: exchange.to_owned(),
            });
        }
        let mut queues = Vec::new();
        let mut seen_queues: HashSet<String> = HashSet::new();
        let mut visited: HashSet<&str> = HashSet::from([exchange]);
        let mut pending: VecDeque<&str> = VecDeque::from([exchange]);
        while let Some(name) = pending.pop_front() {
            let Some(entry) = self.exchanges.get(name) else {
                continue;
            };
            let matched = if name.is_empty() {
                self.default_route(routing_key)
            } else {
                entry.index.route(routing_key, headers)
            };
            if matched.is_empty()
                && let Some(alternate) = entry.exchange.alternate_exchange()
                && let Some((alt_name, _)) = self.exchanges.get_key_value(&alternate)
                && visited.insert(alt_name)
            {
                pending.push_back(alt_name);
            }
            for destination in matched {
                match destination {
                    Destination::Queue(q) => {
                        if seen_queues.insert(q.clone()) {
                            queues.push(Destination::Queue(q));
                        }
                    }
                    Destination::Exchange(e) => {
                        if let Some((e_name, _)) = self.exchanges.get_key_value(&e)
                            && visited.insert(e_name)
                        {
                            pending.push_back(e_name);
                        }
                    }
                }
            }
        }
        Ok(queues)
    }

    fn default_route(&self, routing_key: &str) -> Vec<Destination> {
        if self.queues.contains(routing_key) {
            vec![Destination::Queue(routing_key.to_owned())]
        } else {
            Vec::new()
        }
    }

    fn entry_mut(&mut self, name: &str) -> Result<&mut Entry, ModelError> {
        self.exchanges
            .get_mut(name)
            .ok_or_else(|| ModelError::ExchangeNotFound {
                name: name.to_owned(),
            })
    }

    /// The default exchange's bindings are implicit and fixed, so it cannot be bound, as source
    /// or destination (RabbitMQ: 403); both ends must exist (404).
    fn check_binding_ends(&self, binding: &Binding) -> Result<(), ModelError> {
        if binding.source.is_empty() || binding.destination == Destination::Exchange(String::new())
        {
            return Err(ModelError::DefaultExchange);
        }
        if !self.exchanges.contains_key(&binding.source) {
            return Err(ModelError::ExchangeNotFound {
                name: binding.source.clone(),
            });
        }
        match &binding.destination {
            Destination::Queue(q) if !self.queues.contains(q) => {
                Err(ModelError::QueueNotFound { name: q.clone() })
            }
            Destination::Exchange(e) if !self.exchanges.contains_key(e) => {
                Err(ModelError::ExchangeNotFound { name: e.clone() })
            }
            _ => Ok(()),
        }
    }

    /// Removes an exchange, every binding to it, and auto-delete exchanges emptied by that,
    /// transitively. Returns the names of the auto-deleted exchanges.
    fn remove_exchange_cascade(&mut self, name: &str) -> Vec<String> {
        self.exchanges.remove(name);
        self.remove_destination(&Destination::Exchange(name.to_owned()))
    }

    fn remove_destination(&mut self, destination: &Destination) -> Vec<String> {
        let mut deleted = Vec::new();
        let mut pending = vec![destination.clone()];
        while let Some(dest) = pending.pop() {
            let mut emptied = Vec::new();
            for entry in self.exchanges.values_mut() {
                let removed = entry.index.remove_destination(&dest);
                if removed > 0 && entry.exchange.auto_delete && entry.index.len() == 0 {
                    emptied.push(entry.exchange.name.clone());
                }
            }
            emptied.sort();
            for name in emptied {
                self.exchanges.remove(&name);
                pending.push(Destination::Exchange(name.clone()));
                deleted.push(name);
            }
        }
        deleted
    }
}

fn dedup(mut names: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

/// RabbitMQ's equivalence check on redeclare: type, durable, auto-delete, internal and the
/// alternate exchange must match.
fn check_equivalent(current: &Exchange, requested: &Exchange) -> Result<(), ModelError> {
    let differ = |arg: &'static str, received: String, current_value: String| {
        Err(ModelError::Inequivalent {
            name: current.name.clone(),
            arg,
            received,
            current: current_value,
        })
    };
    if current.kind != requested.kind {
        return differ("type", requested.kind.to_string(), current.kind.to_string());
    }
    if current.durable != requested.durable {
        return differ(
            "durable",
            requested.durable.to_string(),
            current.durable.to_string(),
        );
    }
    if current.auto_delete != requested.auto_delete {
        return differ(
            "auto_delete",
            requested.auto_delete.to_string(),
            current.auto_delete.to_string(),
        );
    }
    if current.internal != requested.internal {
        return differ(
            "internal",
            requested.internal.to_string(),
            current.internal.to_string(),
        );
    }
    if current.alternate_exchange() != requested.alternate_exchange() {
        return differ(
            "alternate-exchange",
            requested.alternate_exchange().unwrap_or_default(),
            current.alternate_exchange().unwrap_or_default(),
        );
    }
    Ok(())
}

#[cfg(test)]
#[path = "topology_tests.rs"]
mod tests;
