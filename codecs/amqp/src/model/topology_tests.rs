use amq_protocol::types::{AMQPValue, FieldTable};

use super::*;

fn q(name: &str) -> Destination {
    Destination::Queue(name.into())
}

fn topology_with_queues(queues: &[&str]) -> Topology {
    let mut t = Topology::new();
    for name in queues {
        t.add_queue(name);
    }
    t
}

fn declare(t: &mut Topology, name: &str, kind: ExchangeKind) {
    t.declare_exchange(Exchange::new(name, kind), false)
        .unwrap();
}

#[test]
fn predeclared_exchanges_exist_with_their_types() {
    let t = Topology::new();
    for (name, kind) in [
        ("", ExchangeKind::Direct),
        ("amq.direct", ExchangeKind::Direct),
        ("amq.fanout", ExchangeKind::Fanout),
        ("amq.topic", ExchangeKind::Topic),
        ("amq.headers", ExchangeKind::Headers),
        ("amq.match", ExchangeKind::Headers),
    ] {
        assert_eq!(t.exchange(name).map(|e| e.kind), Some(kind), "{name:?}");
    }
}

#[test]
fn default_exchange_routes_to_the_queue_named_by_the_key() {
    let t = topology_with_queues(&["jobs"]);
    assert_eq!(t.route("", "jobs", None).unwrap(), vec![q("jobs")]);
    assert!(t.route("", "nope", None).unwrap().is_empty());
}

#[test]
fn default_exchange_cannot_be_declared_bound_or_deleted() {
    let mut t = topology_with_queues(&["q"]);
    let err = t.declare_exchange(Exchange::new("", ExchangeKind::Direct), false);
    assert_eq!(err, Err(ModelError::DefaultExchange));
    assert_eq!(
        t.bind(Binding::to_queue("", "q", "q")),
        Err(ModelError::DefaultExchange)
    );
    assert_eq!(
        t.bind(Binding::to_exchange("amq.direct", "", "k")),
        Err(ModelError::DefaultExchange)
    );
    assert_eq!(
        t.delete_exchange("", false),
        Err(ModelError::DefaultExchange)
    );
    assert_eq!(ModelError::DefaultExchange.reply_code().code(), 403);
}

#[test]
fn passive_declare_of_a_missing_exchange_is_not_found() {
    let mut t = Topology::new();
    let err = t.declare_exchange(Exchange::new("x", ExchangeKind::Direct), true);
    assert_eq!(err, Err(ModelError::ExchangeNotFound { name: "x".into() }));
    let ok = t.declare_exchange(Exchange::new("amq.topic", ExchangeKind::Fanout), true);
    assert_eq!(
        ok,
        Ok(Declared::Existing),
        "passive does not check equivalence"
    );
}

#[test]
fn amq_prefix_is_reserved_for_new_exchanges_but_predeclared_ones_can_be_redeclared() {
    let mut t = Topology::new();
    let err = t.declare_exchange(Exchange::new("amq.mine", ExchangeKind::Direct), false);
    assert_eq!(err.unwrap_err().reply_code().code(), 403);
    let same = t.declare_exchange(Exchange::new("amq.topic", ExchangeKind::Topic), false);
    assert_eq!(same, Ok(Declared::Existing));
}

#[test]
fn redeclare_with_another_type_is_precondition_failed() {
    let mut t = Topology::new();
    declare(&mut t, "logs", ExchangeKind::Fanout);
    let err = t
        .declare_exchange(Exchange::new("logs", ExchangeKind::Direct), false)
        .unwrap_err();
    assert_eq!(err.reply_code().code(), 406);
    assert_eq!(
        err.reply_text(),
        "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'logs': \
         received 'direct' but current is 'fanout'"
    );
}

#[test]
fn redeclare_with_another_durability_is_precondition_failed() {
    let mut t = Topology::new();
    declare(&mut t, "logs", ExchangeKind::Fanout);
    let mut transient = Exchange::new("logs", ExchangeKind::Fanout);
    transient.durable = false;
    assert!(matches!(
        t.declare_exchange(transient, false),
        Err(ModelError::Inequivalent { arg: "durable", .. })
    ));
}

#[test]
fn direct_exchange_routes_by_exact_key() {
    let mut t = topology_with_queues(&["a", "b"]);
    t.bind(Binding::to_queue("amq.direct", "a", "red")).unwrap();
    t.bind(Binding::to_queue("amq.direct", "b", "blue"))
        .unwrap();
    assert_eq!(t.route("amq.direct", "red", None).unwrap(), vec![q("a")]);
}

#[test]
fn fanout_exchange_routes_to_every_bound_queue() {
    let mut t = topology_with_queues(&["a", "b"]);
    t.bind(Binding::to_queue("amq.fanout", "a", "")).unwrap();
    t.bind(Binding::to_queue("amq.fanout", "b", "x")).unwrap();
    assert_eq!(
        t.route("amq.fanout", "any", None).unwrap(),
        vec![q("a"), q("b")]
    );
}

#[test]
fn topic_exchange_routes_by_pattern() {
    let mut t = topology_with_queues(&["eu", "all"]);
    t.bind(Binding::to_queue("amq.topic", "eu", "weather.eu.*"))
        .unwrap();
    t.bind(Binding::to_queue("amq.topic", "all", "weather.#"))
        .unwrap();
    let mut got = t.route("amq.topic", "weather.eu.paris", None).unwrap();
    got.sort();
    assert_eq!(got, vec![q("all"), q("eu")]);
    assert_eq!(
        t.route("amq.topic", "weather.us", None).unwrap(),
        vec![q("all")]
    );
}

#[test]
fn headers_exchange_routes_by_header_values() {
    let mut t = topology_with_queues(&["pdf"]);
    let mut args = FieldTable::default();
    args.insert("x-match".into(), AMQPValue::LongString("all".into()));
    args.insert("format".into(), AMQPValue::LongString("pdf".into()));
    let mut binding = Binding::to_queue("amq.headers", "pdf", "");
    binding.arguments = args;
    t.bind(binding).unwrap();
    let mut headers = FieldTable::default();
    headers.insert("format".into(), AMQPValue::LongString("pdf".into()));
    assert_eq!(
        t.route("amq.headers", "", Some(&headers)).unwrap(),
        vec![q("pdf")]
    );
    assert!(t.route("amq.headers", "", None).unwrap().is_empty());
}

#[test]
fn queue_reached_by_two_bindings_is_routed_once() {
    let mut t = topology_with_queues(&["a"]);
    t.bind(Binding::to_queue("amq.topic", "a", "x.*")).unwrap();
    t.bind(Binding::to_queue("amq.topic", "a", "#")).unwrap();
    assert_eq!(t.route("amq.topic", "x.y", None).unwrap(), vec![q("a")]);
}

#[test]
fn exchange_to_exchange_bindings_are_followed() {
    let mut t = topology_with_queues(&["audit", "eu"]);
    declare(&mut t, "ingress", ExchangeKind::Topic);
    declare(&mut t, "copy", ExchangeKind::Fanout);
    t.bind(Binding::to_exchange("ingress", "copy", "#"))
        .unwrap();
    t.bind(Binding::to_exchange("ingress", "amq.direct", "orders.eu"))
        .unwrap();
    t.bind(Binding::to_queue("copy", "audit", "")).unwrap();
    t.bind(Binding::to_queue("amq.direct", "eu", "orders.eu"))
        .unwrap();
    let mut got = t.route("ingress", "orders.eu", None).unwrap();
    got.sort();
    assert_eq!(got, vec![q("audit"), q("eu")]);
    assert_eq!(
        t.route("ingress", "orders.us", None).unwrap(),
        vec![q("audit")]
    );
}

#[test]
fn exchange_binding_cycles_terminate_and_deliver_once() {
    let mut t = topology_with_queues(&["q"]);
    declare(&mut t, "a", ExchangeKind::Fanout);
    declare(&mut t, "b", ExchangeKind::Fanout);
    t.bind(Binding::to_exchange("a", "b", "")).unwrap();
    t.bind(Binding::to_exchange("b", "a", "")).unwrap();
    t.bind(Binding::to_exchange("a", "a", "")).unwrap();
    t.bind(Binding::to_queue("b", "q", "")).unwrap();
    t.bind(Binding::to_queue("a", "q", "")).unwrap();
    assert_eq!(t.route("a", "k", None).unwrap(), vec![q("q")]);
}

#[test]
fn publishing_to_a_missing_exchange_is_not_found() {
    let t = Topology::new();
    let err = t.route("nope", "k", None).unwrap_err();
    assert_eq!(err.reply_code().code(), 404);
}

#[test]
fn publishing_to_an_internal_exchange_is_refused_but_it_routes_via_bindings() {
    let mut t = topology_with_queues(&["q"]);
    let mut internal = Exchange::new("inner", ExchangeKind::Fanout);
    internal.internal = true;
    t.declare_exchange(internal, false).unwrap();
    t.bind(Binding::to_queue("inner", "q", "")).unwrap();
    t.bind(Binding::to_exchange("amq.fanout", "inner", ""))
        .unwrap();
    assert_eq!(
        t.route("inner", "", None).unwrap_err().reply_code().code(),
        403
    );
    assert_eq!(t.route("amq.fanout", "", None).unwrap(), vec![q("q")]);
}

#[test]
fn unroutable_messages_go_to_the_alternate_exchange() {
    let mut t = topology_with_queues(&["unrouted", "red"]);
    let mut main = Exchange::new("main", ExchangeKind::Direct);
    main.arguments.insert(
        "alternate-exchange".into(),
        AMQPValue::LongString("amq.fanout".into()),
    );
    t.declare_exchange(main, false).unwrap();
    t.bind(Binding::to_queue("main", "red", "red")).unwrap();
    t.bind(Binding::to_queue("amq.fanout", "unrouted", ""))
        .unwrap();
    assert_eq!(t.route("main", "red", None).unwrap(), vec![q("red")]);
    assert_eq!(t.route("main", "blue", None).unwrap(), vec![q("unrouted")]);
}

#[test]
fn binding_to_missing_ends_is_not_found() {
    let mut t = topology_with_queues(&["q"]);
    assert_eq!(
        t.bind(Binding::to_queue("amq.direct", "nope", "k")),
        Err(ModelError::QueueNotFound {
            name: "nope".into()
        })
    );
    assert_eq!(
        t.bind(Binding::to_queue("nope", "q", "k")),
        Err(ModelError::ExchangeNotFound {
            name: "nope".into()
        })
    );
}

#[test]
fn unbinding_stops_routing_and_a_missing_binding_is_fine() {
    let mut t = topology_with_queues(&["q"]);
    let b = Binding::to_queue("amq.direct", "q", "k");
    t.bind(b.clone()).unwrap();
    t.unbind(&b).unwrap();
    assert!(t.route("amq.direct", "k", None).unwrap().is_empty());
    assert_eq!(t.unbind(&b), Ok(vec![]));
}

#[test]
fn removing_a_queue_removes_its_bindings_and_default_route() {
    let mut t = topology_with_queues(&["q"]);
    t.bind(Binding::to_queue("amq.fanout", "q", "")).unwrap();
    t.remove_queue("q");
    assert!(t.route("amq.fanout", "", None).unwrap().is_empty());
    assert!(t.route("", "q", None).unwrap().is_empty());
    assert!(t.bindings_from("amq.fanout").is_empty());
}

#[test]
fn auto_delete_exchange_goes_with_its_last_binding() {
    let mut t = topology_with_queues(&["q1", "q2"]);
    let mut temp = Exchange::new("temp", ExchangeKind::Fanout);
    temp.auto_delete = true;
    t.declare_exchange(temp, false).unwrap();
    t.bind(Binding::to_queue("temp", "q1", "")).unwrap();
    t.bind(Binding::to_queue("temp", "q2", "")).unwrap();
    assert_eq!(t.unbind(&Binding::to_queue("temp", "q1", "")), Ok(vec![]));
    assert!(t.exchange("temp").is_some());
    assert_eq!(t.remove_queue("q2"), vec!["temp".to_owned()]);
    assert!(t.exchange("temp").is_none());
}

#[test]
fn auto_delete_cascades_through_exchange_bindings() {
    let mut t = topology_with_queues(&["q"]);
    let mut outer = Exchange::new("outer", ExchangeKind::Fanout);
    outer.auto_delete = true;
    let mut inner = Exchange::new("inner", ExchangeKind::Fanout);
    inner.auto_delete = true;
    t.declare_exchange(outer, false).unwrap();
    t.declare_exchange(inner, false).unwrap();
    t.bind(Binding::to_exchange("outer", "inner", "")).unwrap();
    t.bind(Binding::to_queue("inner", "q", "")).unwrap();
    let mut deleted = t.remove_queue("q");
    deleted.sort();
    assert_eq!(deleted, vec!["inner".to_owned(), "outer".to_owned()]);
}

#[test]
fn delete_if_unused_refuses_an_exchange_with_bindings() {
    let mut t = topology_with_queues(&["q"]);
    declare(&mut t, "x", ExchangeKind::Direct);
    t.bind(Binding::to_queue("x", "q", "k")).unwrap();
    assert_eq!(
        t.delete_exchange("x", true),
        Err(ModelError::InUse { name: "x".into() })
    );
    assert_eq!(t.delete_exchange("x", false), Ok(true));
    assert_eq!(t.delete_exchange("x", false), Ok(false));
}

#[test]
fn deleting_an_exchange_removes_bindings_to_it() {
    let mut t = topology_with_queues(&["q"]);
    declare(&mut t, "x", ExchangeKind::Fanout);
    t.bind(Binding::to_exchange("amq.fanout", "x", "")).unwrap();
    t.bind(Binding::to_queue("x", "q", "")).unwrap();
    t.delete_exchange("x", false).unwrap();
    assert!(t.bindings_from("amq.fanout").is_empty());
}

#[test]
fn predeclared_exchanges_cannot_be_deleted() {
    let mut t = Topology::new();
    assert_eq!(
        t.delete_exchange("amq.topic", false)
            .unwrap_err()
            .reply_code()
            .code(),
        403
    );
}
