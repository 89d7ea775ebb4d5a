//! Tests of parsing, validation and the templates.

use serde_json::{Value, json};

use crate::*;

fn node(id: &str, node_type: &str, data: Value) -> Value {
    json!({"id": id, "type": node_type, "position": {"x": 10, "y": 20.5}, "data": data})
}

fn edge(id: &str, source: &str, target: &str) -> Value {
    json!({"id": id, "source": source, "target": target})
}

fn branch(id: &str, source: &str, target: &str, handle: &str) -> Value {
    json!({"id": id, "source": source, "target": target, "sourceHandle": handle})
}

fn doc(nodes: Vec<Value>, edges: Vec<Value>) -> Value {
    json!({"nodes": nodes, "edges": edges, "viewport": {"x": 0, "y": 0, "zoom": 1}})
}

fn trigger(id: &str) -> Value {
    node(id, "trigger", json!({"trigger": {"kind": "manual"}}))
}

fn email(id: &str) -> Value {
    node(
        id,
        "email",
        json!({"to": "partner_a", "template": "welcome"}),
    )
}

fn sms(id: &str) -> Value {
    node(
        id,
        "sms",
        json!({"to": "both_partners", "text": "Hi {{ couple.partner_a.first_name }}"}),
    )
}

fn end(id: &str) -> Value {
    node(id, "end", json!({}))
}

fn wait(id: &str) -> Value {
    node(id, "wait", json!({"mode": "duration", "seconds": 86_400}))
}

fn decision(id: &str, labels: &[&str], default_label: &str) -> Value {
    let conditions: Vec<Value> = labels
        .iter()
        .map(|l| json!({"label": l, "when": "booking.total_minor > 100000"}))
        .collect();
    node(
        id,
        "decision",
        json!({"conditions": conditions, "default_label": default_label}),
    )
}

fn parse(value: &Value) -> JourneyDocument {
    match JourneyDocument::parse(value) {
        Ok(doc) => doc,
        Err(e) => panic!("document should parse: {e}"),
    }
}

fn parse_errors(value: &Value) -> Vec<FieldError> {
    match JourneyDocument::parse(value) {
        Ok(doc) => panic!("document should not parse: {doc:?}"),
        Err(e) => e.0,
    }
}

/// Parses (which must succeed) and validates, returning the errors (empty when valid).
fn validation_errors(value: &Value, mode: Mode) -> Vec<FieldError> {
    validate(&parse(value), mode)
        .err()
        .map(|e| e.0)
        .unwrap_or_default()
}

#[track_caller]
fn assert_has(errors: &[FieldError], field: &str, fragment: &str) {
    assert!(
        errors
            .iter()
            .any(|e| e.field == field && e.message.contains(fragment)),
        "no error `{field}` containing `{fragment}` in {errors:#?}"
    );
}

#[track_caller]
fn assert_valid(value: &Value, mode: Mode) {
    let errors = validation_errors(value, mode);
    assert!(errors.is_empty(), "expected valid, got {errors:#?}");
}

/// trigger → mail → end
fn linear() -> Value {
    doc(
        vec![trigger("t"), email("mail"), end("end")],
        vec![edge("e1", "t", "mail"), edge("e2", "mail", "end")],
    )
}

// ---------------------------------------------------------------- parsing

#[test]
fn parse_drops_transient_fields_and_round_trips() {
    let input = json!({
        "nodes": [
            {
                "id": "t", "type": "trigger", "position": {"x": 1, "y": 2},
                "data": {"trigger": {"kind": "cron", "expression": "0 9 * * MON", "time_zone": "Europe/London"}},
                "selected": true, "dragging": false, "measured": {"width": 150, "height": 40},
                "width": 150, "height": 40, "positionAbsolute": {"x": 1, "y": 2},
                "resizing": false, "focusable": true, "draggable": true
            },
            {
                "id": "mail", "type": "email", "position": {"x": 1.5, "y": -2e3},
                "data": {"to": "vendor", "subject": "New date", "text": "{{ couple.display_name }}", "html": null},
                "selected": false
            },
            {"id": "end", "type": "end", "position": {"x": 0, "y": 0}, "data": {}}
        ],
        "edges": [
            {
                "id": "e1", "source": "t", "target": "mail", "sourceHandle": null,
                "targetHandle": "in", "label": "go", "selected": true, "animated": true,
                "style": {"stroke": "red"}, "markerEnd": {"type": "arrowclosed"}, "type": "smoothstep"
            },
            {"id": "e2", "source": "mail", "target": "end", "sourceHandle": ""}
        ],
        "viewport": {"x": 12.5, "y": -3, "zoom": 0.75},
        "someUiState": {"panel": "open"}
    });
    let parsed = parse(&input);
    let out = parsed.to_json();
    assert_eq!(
        out,
        json!({
            "nodes": [
                {
                    "id": "t", "type": "trigger", "position": {"x": 1.0, "y": 2.0},
                    "data": {"trigger": {"kind": "cron", "expression": "0 9 * * MON", "time_zone": "Europe/London"}}
                },
                {
                    "id": "mail", "type": "email", "position": {"x": 1.5, "y": -2000.0},
                    "data": {"to": "vendor", "subject": "New date", "text": "{{ couple.display_name }}"}
                },
                {"id": "end", "type": "end", "position": {"x": 0.0, "y": 0.0}, "data": {}}
            ],
            "edges": [
                {"id": "e1", "source": "t", "target": "mail", "targetHandle": "in", "label": "go"},
                {"id": "e2", "source": "mail", "target": "end"}
            ],
            "viewport": {"x": 12.5, "y": -3.0, "zoom": 0.75}
        })
    );
    assert_eq!(parse(&out), parsed);
    assert_eq!(parse(&out).to_json(), out);
    assert_eq!(parsed.edges[0].source_handle, None);
    assert_eq!(parsed.edges[0].target_handle.as_deref(), Some("in"));
}

#[test]
fn parse_gives_typed_node_kinds() {
    let parsed = parse(&doc(
        vec![
            node(
                "t",
                "trigger",
                json!({"trigger": {"kind": "date_reached", "date": "wedding_date", "offset_days": -30, "at": "09:00"}}),
            ),
            node(
                "w",
                "wait",
                json!({"mode": "until_event", "event_type": "form.submitted", "filter": {"form_id": "timeline"}, "timeout_seconds": 600}),
            ),
            node("c", "client_action", json!({"title": "Sign"})),
        ],
        vec![],
    ));
    let Some(Trigger::DateReached {
        date,
        offset_days,
        at,
    }) = parsed.trigger()
    else {
        panic!(
            "expected a date_reached trigger, got {:?}",
            parsed.trigger()
        );
    };
    assert_eq!((date.as_str(), *offset_days), (WEDDING_DATE, -30));
    assert_eq!(at.to_string(), "09:00:00");
    assert!(matches!(
        parsed.node("w").map(|n| &n.kind),
        Some(NodeKind::Wait(Wait::UntilEvent {
            timeout_seconds: 600,
            filter: Some(_),
            ..
        }))
    ));
    // `both_partners` defaults to false.
    assert!(matches!(
        parsed.node("c").map(|n| &n.kind),
        Some(NodeKind::ClientAction(ClientAction {
            both_partners: false,
            ..
        }))
    ));
}

#[test]
fn unknown_data_key_is_an_error_naming_the_node() {
    let errors = parse_errors(&doc(
        vec![
            trigger("t"),
            node(
                "mail",
                "email",
                json!({"to": "partner_a", "template": "x", "colour": "red"}),
            ),
            node(
                "w",
                "wait",
                json!({"mode": "duration", "seconds": 5, "until": "later"}),
            ),
            node(
                "t2",
                "trigger",
                json!({"trigger": {"kind": "manual", "extra": 1}}),
            ),
        ],
        vec![],
    ));
    assert_has(&errors, "nodes.mail.data", "unknown field `colour`");
    assert_has(&errors, "nodes.w.data", "unknown field `until`");
    assert_has(&errors, "nodes.t2.data", "unknown field `extra`");
    assert_eq!(errors.len(), 3, "{errors:#?}");
}

#[test]
fn parse_errors_name_the_node_and_are_all_collected() {
    let errors = parse_errors(&json!({
        "nodes": [
            {"id": "a", "type": "rocket", "position": {"x": 0, "y": 0}, "data": {}},
            {"id": "bad id", "type": "end", "position": {"x": 0, "y": 0}},
            {"id": "c", "type": "end", "data": {}},
            {"id": "d", "type": "email", "position": {"x": 0, "y": 0}, "data": {"to": "vendor", "template": "x", "text": "y"}},
            {"id": "e", "type": "email", "position": {"x": 0, "y": 0}, "data": {"to": "vendor", "text": "y"}},
            {"id": "f", "type": "wait", "position": {"x": 0, "y": 0}, "data": {"mode": "until_date", "date": "wedding_date", "offset_days": 1, "at": "9:00", "if_passed": "skip"}},
            {"id": "g", "type": "trigger", "position": {"x": 0, "y": 0}, "data": {"trigger": {"kind": "cron", "expression": "* * * * *", "time_zone": "Mars/Olympus"}}},
            {"id": "h", "type": "notification", "position": {"x": 0, "y": 0}, "data": {"channel": "fax", "text": "x"}},
            {"id": "i", "type": "sms", "position": {"x": 0, "y": 0}, "data": {"to": "vendor"}},
            {"id": "j", "type": "payment", "position": {"x": 0, "y": 0}, "data": {"amount_minor": -5, "currency": "GBP"}},
            "not a node"
        ],
        "edges": [
            {"id": "e1", "source": "a", "label": 7},
            {"id": "e2", "source": "a", "target": "c", "sourceHandle": 3}
        ]
    }));
    assert_has(&errors, "nodes.a.type", "unknown node type `rocket`");
    assert_has(&errors, "nodes[1].id", "may only contain");
    assert_has(&errors, "nodes.c.position", "is required");
    assert_has(&errors, "nodes.d.data", "not both");
    assert_has(&errors, "nodes.e.data", "needs a `subject`");
    assert_has(&errors, "nodes.f.data", "must be HH:MM");
    assert_has(
        &errors,
        "nodes.g.data",
        "unknown IANA time zone `Mars/Olympus`",
    );
    assert_has(&errors, "nodes.h.data", "unknown variant `fax`");
    assert_has(&errors, "nodes.i.data", "needs either `template` or `text`");
    assert_has(&errors, "nodes.j.data", "invalid value");
    assert_has(&errors, "nodes[10]", "must be an object");
    assert_has(&errors, "edges.e1.target", "is required");
    assert_has(&errors, "edges.e1.label", "must be a string or null");
    assert_has(&errors, "edges.e2.sourceHandle", "must be a string or null");
    assert_eq!(errors.len(), 14, "{errors:#?}");
}

#[test]
fn parse_rejects_non_documents_and_enforces_size_bounds() {
    assert_has(
        &parse_errors(&json!([1, 2])),
        "document",
        "must be a JSON object",
    );
    assert_has(&parse_errors(&json!({"edges": []})), "nodes", "is required");
    assert_has(
        &parse_errors(&json!({"nodes": {}, "edges": []})),
        "nodes",
        "must be an array",
    );
    let many: Vec<Value> = (0..=MAX_NODES).map(|i| end(&format!("n{i}"))).collect();
    assert_has(
        &parse_errors(&doc(many, vec![])),
        "nodes",
        "at most 500 nodes",
    );
    let edges: Vec<Value> = (0..=MAX_EDGES)
        .map(|i| edge(&format!("e{i}"), "a", "b"))
        .collect();
    assert_has(
        &parse_errors(&doc(vec![], edges)),
        "edges",
        "at most 2000 edges",
    );
    let long_id = "x".repeat(MAX_ID_LEN + 1);
    assert_has(
        &parse_errors(&doc(vec![end(&long_id)], vec![])),
        "nodes[0].id",
        "1 to 64",
    );
    assert_has(
        &parse_errors(&json!({"nodes": [], "edges": [], "viewport": {"x": 0, "y": 0, "zoom": 0}})),
        "viewport.zoom",
        "greater than zero",
    );
    // The viewport is optional.
    assert_eq!(
        parse(&json!({"nodes": [], "edges": []})).viewport,
        Viewport::default()
    );
}

// ---------------------------------------------------------------- structure

#[test]
fn a_linear_journey_is_valid_in_both_modes() {
    assert_valid(&linear(), Mode::Draft);
    assert_valid(&linear(), Mode::Publish);
}

#[test]
fn two_triggers_are_rejected_naming_the_second() {
    let value = doc(
        vec![trigger("t"), trigger("t2"), end("end")],
        vec![edge("e1", "t", "end"), edge("e2", "t2", "end")],
    );
    let errors = validation_errors(&value, Mode::Draft);
    assert_has(
        &errors,
        "nodes.t2",
        "exactly one trigger node; `t` is already the trigger",
    );
    assert_eq!(errors.len(), 1, "{errors:#?}");
}

#[test]
fn a_journey_without_trigger_is_rejected() {
    let errors = validation_errors(&doc(vec![end("end")], vec![]), Mode::Draft);
    assert_has(&errors, "nodes", "exactly one trigger node, found none");
}

#[test]
fn a_trigger_with_incoming_edges_is_rejected() {
    let value = doc(
        vec![trigger("t"), wait("w")],
        vec![edge("e1", "t", "w"), edge("back", "w", "t")],
    );
    assert_has(
        &validation_errors(&value, Mode::Draft),
        "nodes.t",
        "cannot have incoming edges, found 1 (back)",
    );
}

#[test]
fn duplicate_ids_are_rejected() {
    let value = doc(
        vec![trigger("t"), email("mail"), email("mail"), end("end")],
        vec![edge("e1", "t", "mail"), edge("e1", "mail", "end")],
    );
    let errors = validation_errors(&value, Mode::Draft);
    assert_has(
        &errors,
        "nodes.mail",
        "duplicate node id: nodes[1] and nodes[2]",
    );
    assert_has(
        &errors,
        "edges.e1",
        "duplicate edge id: edges[0] and edges[1]",
    );
}

#[test]
fn dangling_edges_are_rejected_naming_the_edge() {
    let value = doc(
        vec![trigger("t"), end("end")],
        vec![
            edge("e1", "t", "end"),
            edge("e9", "end", "ghost"),
            edge("e10", "nobody", "end"),
        ],
    );
    let errors = validation_errors(&value, Mode::Draft);
    assert_has(&errors, "edges.e9.target", "node `ghost` does not exist");
    assert_has(&errors, "edges.e10.source", "node `nobody` does not exist");
    assert_eq!(errors.len(), 2, "{errors:#?}");
}

#[test]
fn unreachable_nodes_fail_publish_but_not_draft() {
    let mut value = linear();
    if let Some(nodes) = value["nodes"].as_array_mut() {
        nodes.push(sms("loose"));
        nodes.push(end("loose-end"));
    }
    if let Some(edges) = value["edges"].as_array_mut() {
        edges.push(edge("e3", "loose", "loose-end"));
    }
    assert_valid(&value, Mode::Draft);
    let errors = validation_errors(&value, Mode::Publish);
    assert_has(&errors, "nodes.loose", "not reachable from the trigger");
    assert_has(&errors, "nodes.loose-end", "not reachable from the trigger");
    assert_eq!(errors.len(), 2, "{errors:#?}");
}

#[test]
fn plain_nodes_have_at_most_one_outgoing_edge() {
    let value = doc(
        vec![trigger("t"), email("mail"), end("a"), end("b")],
        vec![
            edge("e1", "t", "mail"),
            edge("e2", "mail", "a"),
            edge("e3", "mail", "b"),
        ],
    );
    assert_has(
        &validation_errors(&value, Mode::Draft),
        "nodes.mail",
        "a email node has at most one outgoing edge, found 2 (e2, e3)",
    );
}

#[test]
fn publish_requires_an_outgoing_edge_from_plain_nodes() {
    let value = doc(
        vec![trigger("t"), email("mail")],
        vec![edge("e1", "t", "mail")],
    );
    assert_valid(&value, Mode::Draft);
    let errors = validation_errors(&value, Mode::Publish);
    assert_has(&errors, "nodes.mail", "needs an outgoing edge");
    assert_eq!(errors.len(), 1, "{errors:#?}");
}

#[test]
fn an_end_node_cannot_have_outgoing_edges() {
    let value = doc(
        vec![trigger("t"), end("end"), email("mail")],
        vec![edge("e1", "t", "end"), edge("e2", "end", "mail")],
    );
    assert_has(
        &validation_errors(&value, Mode::Draft),
        "nodes.end",
        "an end node cannot have outgoing edges, found 1 (e2)",
    );
}

#[test]
fn a_handle_on_a_plain_node_is_rejected() {
    let value = doc(
        vec![trigger("t"), email("mail"), end("end")],
        vec![edge("e1", "t", "mail"), branch("e2", "mail", "end", "paid")],
    );
    assert_has(
        &validation_errors(&value, Mode::Draft),
        "edges.e2.sourceHandle",
        "node `mail` (email) has a single output, not `paid`",
    );
}

// ---------------------------------------------------------------- decisions

/// trigger → d, with d's condition labels `yes`/`no`, default `other`, and the given edges.
fn decision_doc(decision_node: Value, edges: Vec<Value>) -> Value {
    let mut all = vec![edge("e0", "t", "d")];
    all.extend(edges);
    doc(
        vec![trigger("t"), decision_node, end("a"), end("b"), end("c")],
        all,
    )
}

#[test]
fn a_complete_decision_is_valid_with_handles_or_labels() {
    let with_handles = decision_doc(
        decision("d", &["yes", "no"], "other"),
        vec![
            branch("e1", "d", "a", "yes"),
            branch("e2", "d", "b", "no"),
            branch("e3", "d", "c", "other"),
        ],
    );
    assert_valid(&with_handles, Mode::Publish);
    let with_labels = decision_doc(
        decision("d", &["yes", "no"], "other"),
        vec![
            json!({"id": "e1", "source": "d", "target": "a", "label": "yes"}),
            json!({"id": "e2", "source": "d", "target": "b", "label": "no"}),
            json!({"id": "e3", "source": "d", "target": "c", "sourceHandle": null, "label": "other"}),
        ],
    );
    assert_valid(&with_labels, Mode::Publish);
    let doc = parse(&with_labels);
    assert_eq!(doc.next("d", Some("no")), Some("b"));
    assert_eq!(
        doc.next("d", None),
        None,
        "a decision has no single next node"
    );
    assert_eq!(doc.next("t", None), Some("d"));
    assert_eq!(doc.next("a", None), None);
}

#[test]
fn a_decision_label_without_an_edge_fails_publish() {
    let value = decision_doc(
        decision("d", &["yes", "no"], "other"),
        vec![
            branch("e1", "d", "a", "yes"),
            branch("e3", "d", "c", "other"),
        ],
    );
    assert_valid(&value, Mode::Draft);
    let errors = validation_errors(&value, Mode::Publish);
    assert_has(
        &errors,
        "nodes.d.data.conditions[1].label",
        "no outgoing edge for output `no`",
    );
    // End `b` was meant for `no`, so it is loose too.
    assert_has(&errors, "nodes.b", "not reachable from the trigger");
    assert_eq!(errors.len(), 2, "{errors:#?}");
    let no_default = decision_doc(
        decision("d", &["yes"], "other"),
        vec![branch("e1", "d", "a", "yes")],
    );
    assert_has(
        &validation_errors(&no_default, Mode::Publish),
        "nodes.d.data.default_label",
        "no outgoing edge for output `other`",
    );
}

#[test]
fn a_decision_edge_with_an_extra_or_missing_label_is_rejected() {
    let value = decision_doc(
        decision("d", &["yes"], "other"),
        vec![
            branch("e1", "d", "a", "yes"),
            branch("e2", "d", "b", "maybe"),
            edge("e3", "d", "c"),
        ],
    );
    let errors = validation_errors(&value, Mode::Draft);
    assert_has(
        &errors,
        "edges.e2.sourceHandle",
        "node `d` (decision) has no output `maybe`; expected one of `yes`, `other`",
    );
    assert_has(
        &errors,
        "edges.e3.sourceHandle",
        "an edge leaving `d` (decision) must name one of its outputs",
    );
}

#[test]
fn duplicate_decision_labels_are_rejected() {
    let value = decision_doc(
        decision("d", &["yes", "yes"], "yes"),
        vec![branch("e1", "d", "a", "yes")],
    );
    let errors = validation_errors(&value, Mode::Draft);
    assert_has(
        &errors,
        "nodes.d.data.conditions[1].label",
        "duplicate label `yes` (also conditions[0].label)",
    );
    assert_has(
        &errors,
        "nodes.d.data.default_label",
        "duplicate label `yes`",
    );
}

#[test]
fn a_decision_label_with_two_edges_is_rejected() {
    let value = decision_doc(
        decision("d", &["yes"], "other"),
        vec![
            branch("e1", "d", "a", "yes"),
            branch("e2", "d", "b", "yes"),
            branch("e3", "d", "c", "other"),
        ],
    );
    assert_has(
        &validation_errors(&value, Mode::Draft),
        "nodes.d.data.conditions[0].label",
        "output `yes` must have exactly one outgoing edge, found 2 (e1, e2)",
    );
}

#[test]
fn a_bad_decision_expression_names_the_node_and_condition() {
    let value = decision_doc(
        node(
            "d",
            "decision",
            json!({"conditions": [
                {"label": "big", "when": "booking.total_minor >"},
                {"label": "ok", "when": "event.kind == 'x' and couple.guests | length > 10"},
                {"label": "blank", "when": " "}
            ], "default_label": "other"}),
        ),
        vec![],
    );
    let errors = validation_errors(&value, Mode::Draft);
    assert_has(
        &errors,
        "nodes.d.data.conditions[0].when",
        "not a valid MiniJinja expression",
    );
    assert_has(
        &errors,
        "nodes.d.data.conditions[2].when",
        "must not be empty",
    );
    assert_eq!(errors.len(), 2, "{errors:#?}");
}

#[test]
fn a_decision_needs_a_condition() {
    let value = decision_doc(
        node(
            "d",
            "decision",
            json!({"conditions": [], "default_label": "other"}),
        ),
        vec![branch("e1", "d", "a", "other")],
    );
    assert_has(
        &validation_errors(&value, Mode::Draft),
        "nodes.d.data.conditions",
        "at least one condition",
    );
}

// ---------------------------------------------------------------- waits and payments

fn until_event(id: &str) -> Value {
    node(
        id,
        "wait",
        json!({"mode": "until_event", "event_type": "form.submitted", "timeout_seconds": 3600}),
    )
}

#[test]
fn until_event_needs_both_event_and_timeout_edges() {
    let missing_timeout = doc(
        vec![trigger("t"), until_event("w"), end("a")],
        vec![edge("e1", "t", "w"), branch("e2", "w", "a", "event")],
    );
    assert_valid(&missing_timeout, Mode::Draft);
    let errors = validation_errors(&missing_timeout, Mode::Publish);
    assert_has(&errors, "nodes.w", "no outgoing edge for output `timeout`");
    assert_eq!(errors.len(), 1, "{errors:#?}");

    let complete = doc(
        vec![trigger("t"), until_event("w"), end("a"), end("b")],
        vec![
            edge("e1", "t", "w"),
            branch("e2", "w", "a", "event"),
            branch("e3", "w", "b", "timeout"),
        ],
    );
    assert_valid(&complete, Mode::Publish);
    let doc = parse(&complete);
    assert_eq!(doc.next("w", Some(HANDLE_TIMEOUT)), Some("b"));
    assert_eq!(doc.next("w", Some(HANDLE_EVENT)), Some("a"));
}

#[test]
fn a_plain_wait_rejects_branch_handles() {
    let value = doc(
        vec![trigger("t"), wait("w"), end("a")],
        vec![edge("e1", "t", "w"), branch("e2", "w", "a", "timeout")],
    );
    assert_has(
        &validation_errors(&value, Mode::Draft),
        "edges.e2.sourceHandle",
        "node `w` (wait) has a single output, not `timeout`",
    );
}

fn payment(id: &str, timeout_days: Option<u32>) -> Value {
    let mut data = json!({"amount_minor": 25_000, "currency": "GBP", "description": "Deposit"});
    if let (Some(days), Some(obj)) = (timeout_days, data.as_object_mut()) {
        obj.insert("timeout_days".into(), days.into());
    }
    node(id, "payment", data)
}

#[test]
fn payment_timeout_handle_follows_timeout_days() {
    // With timeout_days, `timeout` is required on publish.
    let value = doc(
        vec![trigger("t"), payment("pay", Some(7)), end("a")],
        vec![edge("e1", "t", "pay"), branch("e2", "pay", "a", "paid")],
    );
    assert_valid(&value, Mode::Draft);
    assert_has(
        &validation_errors(&value, Mode::Publish),
        "nodes.pay",
        "no outgoing edge for output `timeout`",
    );

    // Without it, `paid` alone is complete and a `timeout` edge is an error.
    let value = doc(
        vec![trigger("t"), payment("pay", None), end("a"), end("b")],
        vec![
            edge("e1", "t", "pay"),
            branch("e2", "pay", "a", "paid"),
            branch("e3", "pay", "b", "timeout"),
        ],
    );
    assert_has(
        &validation_errors(&value, Mode::Draft),
        "edges.e3.sourceHandle",
        "has no output `timeout` (set `timeout_days` to use it)",
    );
    let value = doc(
        vec![trigger("t"), payment("pay", None), end("a")],
        vec![edge("e1", "t", "pay"), branch("e2", "pay", "a", "paid")],
    );
    assert_valid(&value, Mode::Publish);

    // `paid` is always required on publish.
    let value = doc(
        vec![trigger("t"), payment("pay", None)],
        vec![edge("e1", "t", "pay")],
    );
    assert_has(
        &validation_errors(&value, Mode::Publish),
        "nodes.pay",
        "no outgoing edge for output `paid`",
    );
}

// ---------------------------------------------------------------- cycles

#[test]
fn an_instant_only_cycle_is_rejected_naming_its_nodes() {
    // t → mail → text → d -(again)→ mail; d -(done)→ end
    let value = doc(
        vec![
            trigger("t"),
            email("mail"),
            sms("text"),
            decision("d", &["again"], "done"),
            end("end"),
        ],
        vec![
            edge("e1", "t", "mail"),
            edge("e2", "mail", "text"),
            edge("e3", "text", "d"),
            branch("e4", "d", "mail", "again"),
            branch("e5", "d", "end", "done"),
        ],
    );
    let errors = validation_errors(&value, Mode::Draft);
    assert_has(
        &errors,
        "nodes.mail",
        "nodes `mail`, `text`, `d` form a cycle with no wait, client_action or vendor_action node",
    );
    assert_eq!(errors.len(), 1, "{errors:#?}");
}

#[test]
fn an_instant_self_loop_is_rejected() {
    let value = doc(
        vec![
            trigger("t"),
            node("hook", "webhook", json!({"event_type": "journey.step"})),
        ],
        vec![edge("e1", "t", "hook"), edge("e2", "hook", "hook")],
    );
    assert_has(
        &validation_errors(&value, Mode::Draft),
        "nodes.hook",
        "nodes `hook` form a cycle",
    );
}

#[test]
fn a_cycle_through_a_wait_or_a_person_is_accepted() {
    // t → mail → w(wait) → d -(again)→ mail; d -(done)→ end
    let through_wait = doc(
        vec![
            trigger("t"),
            email("mail"),
            wait("w"),
            decision("d", &["again"], "done"),
            end("end"),
        ],
        vec![
            edge("e1", "t", "mail"),
            edge("e2", "mail", "w"),
            edge("e3", "w", "d"),
            branch("e4", "d", "mail", "again"),
            branch("e5", "d", "end", "done"),
        ],
    );
    assert_valid(&through_wait, Mode::Publish);

    let through_client = doc(
        vec![
            trigger("t"),
            node(
                "sign",
                "client_action",
                json!({"title": "Sign the contract", "both_partners": true}),
            ),
            decision("d", &["unsigned"], "signed"),
            end("end"),
        ],
        vec![
            edge("e1", "t", "sign"),
            edge("e2", "sign", "d"),
            branch("e3", "d", "sign", "unsigned"),
            branch("e4", "d", "end", "signed"),
        ],
    );
    assert_valid(&through_client, Mode::Publish);
}

#[test]
fn an_instant_loop_inside_a_blocking_component_is_still_rejected() {
    // d1 → w → d1 is fine, but d1 → d2 → d1 in the same component has no blocking node.
    let value = doc(
        vec![
            trigger("t"),
            decision("d1", &["wait"], "spin"),
            decision("d2", &["back"], "out"),
            wait("w"),
            end("end"),
        ],
        vec![
            edge("e1", "t", "d1"),
            branch("e2", "d1", "w", "wait"),
            edge("e3", "w", "d1"),
            branch("e4", "d1", "d2", "spin"),
            branch("e5", "d2", "d1", "back"),
            branch("e6", "d2", "end", "out"),
        ],
    );
    let errors = validation_errors(&value, Mode::Publish);
    assert_has(&errors, "nodes.d1", "nodes `d1`, `d2` form a cycle");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(MAX_STEPS_PER_INSTANCE, 1000);
}

// ---------------------------------------------------------------- node data

#[test]
fn a_bad_cron_expression_names_the_trigger() {
    let value = doc(
        vec![
            node(
                "t",
                "trigger",
                json!({"trigger": {"kind": "cron", "expression": "0 25 * * MON"}}),
            ),
            end("end"),
        ],
        vec![edge("e1", "t", "end")],
    );
    assert_has(
        &validation_errors(&value, Mode::Draft),
        "nodes.t.data.trigger.expression",
        "invalid cron expression: ",
    );
}

#[test]
fn bad_minijinja_templates_name_the_node_and_field() {
    let value = doc(
        vec![
            trigger("t"),
            node(
                "mail",
                "email",
                json!({"to": "both_partners", "subject": "Hi {{ couple.name", "text": "ok", "html": "{% if x %}no end"}),
            ),
            node("text", "sms", json!({"to": "partner_b", "text": "{{ }}"})),
            node(
                "ping",
                "notification",
                json!({"channel": "slack", "text": "{% for %}"}),
            ),
            node(
                "fine",
                "email",
                json!({"to": "vendor", "subject": "{{ couple.display_name | upper }}", "text": "{% if booking %}{{ booking.id }}{% endif %}"}),
            ),
        ],
        vec![],
    );
    let errors = validation_errors(&value, Mode::Draft);
    assert_has(
        &errors,
        "nodes.mail.data.subject",
        "is not a valid MiniJinja template",
    );
    assert_has(
        &errors,
        "nodes.mail.data.html",
        "is not a valid MiniJinja template",
    );
    assert_has(
        &errors,
        "nodes.text.data.text",
        "is not a valid MiniJinja template",
    );
    assert_has(
        &errors,
        "nodes.ping.data.text",
        "is not a valid MiniJinja template",
    );
    assert_eq!(errors.len(), 4, "{errors:#?}");
}

#[test]
fn node_data_rules_name_the_field() {
    let value = doc(
        vec![
            node(
                "t",
                "trigger",
                json!({"trigger": {"kind": "event", "event_type": "Payment"}}),
            ),
            node(
                "pay",
                "payment",
                json!({"amount_minor": 0, "currency": "gbp", "timeout_days": 0}),
            ),
            node("w", "wait", json!({"mode": "duration", "seconds": 0})),
            node(
                "w2",
                "wait",
                json!({"mode": "until_date", "date": "Wedding Date", "offset_days": 5000, "at": "09:00", "if_passed": "run_now"}),
            ),
            node(
                "w3",
                "wait",
                json!({"mode": "until_event", "event_type": "form.", "timeout_seconds": 0}),
            ),
            node(
                "todo",
                "task",
                json!({"title": "  ", "due_offset_days": -4000, "assignee": ""}),
            ),
            node(
                "crm",
                "crm_update",
                json!({"system": "hubspot", "fields": {}}),
            ),
            node(
                "va",
                "vendor_action",
                json!({"title": "x".repeat(MAX_TITLE_LEN + 1)}),
            ),
            node(
                "ca",
                "client_action",
                json!({"title": "Fill in", "form_id": "has space"}),
            ),
            node("hook", "webhook", json!({"event_type": "journey.Custom"})),
            node("mail", "email", json!({"to": "vendor", "template": ""})),
            node(
                "big",
                "sms",
                json!({"to": "vendor", "text": "x".repeat(MAX_TEXT_BYTES + 1)}),
            ),
        ],
        vec![],
    );
    let errors = validation_errors(&value, Mode::Draft);
    let expected = [
        ("nodes.t.data.trigger.event_type", "dot-separated lowercase"),
        ("nodes.pay.data.amount_minor", "greater than zero"),
        ("nodes.pay.data.currency", "three uppercase letters"),
        ("nodes.pay.data.timeout_days", "between 1 and 3650"),
        ("nodes.w.data.seconds", "between 1 and"),
        ("nodes.w2.data.date", "not a date the hub keeps"),
        ("nodes.w2.data.offset_days", "between -3650 and 3650"),
        ("nodes.w3.data.event_type", "dot-separated lowercase"),
        ("nodes.w3.data.timeout_seconds", "between 1 and"),
        ("nodes.todo.data.title", "must not be empty"),
        ("nodes.todo.data.due_offset_days", "between -3650 and 3650"),
        ("nodes.todo.data.assignee", "must not be empty when given"),
        ("nodes.crm.data.fields", "at least one field"),
        ("nodes.va.data.title", "at most 200 characters"),
        ("nodes.ca.data.form_id", "may only contain"),
        ("nodes.hook.data.event_type", "dot-separated lowercase"),
        ("nodes.mail.data.template", "1 to 128 characters"),
        ("nodes.big.data.text", "at most 65536 bytes"),
    ];
    for (field, fragment) in expected {
        assert_has(&errors, field, fragment);
    }
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
}

#[test]
fn all_trigger_kinds_parse_and_validate() {
    let kinds = [
        json!({"kind": "event", "event_type": "payment.completed", "filter": {"amount_minor": {"gte": 100}}}),
        json!({"kind": "form_submission", "form_id": "questionnaire"}),
        json!({"kind": "form_submission"}),
        json!({"kind": "payment_received"}),
        json!({"kind": "date_reached", "date": "wedding_date", "offset_days": -45, "at": "09:00"}),
        json!({"kind": "time_delay", "after_seconds": 3600}),
        json!({"kind": "manual"}),
        json!({"kind": "cron", "expression": "0 9 * * MON-FRI", "time_zone": "America/New_York"}),
    ];
    for kind in kinds {
        let value = doc(
            vec![node("t", "trigger", json!({"trigger": kind})), end("end")],
            vec![edge("e1", "t", "end")],
        );
        assert_valid(&value, Mode::Publish);
        let parsed = parse(&value);
        assert_eq!(parse(&parsed.to_json()), parsed);
    }
}

#[test]
fn validation_collects_every_error() {
    let value = doc(
        vec![
            trigger("t"),
            trigger("t2"),
            node(
                "pay",
                "payment",
                json!({"amount_minor": 0, "currency": "GBP"}),
            ),
            end("end"),
            email("loose"),
        ],
        vec![
            edge("e1", "t", "pay"),
            edge("e2", "end", "t"),
            edge("e3", "pay", "ghost"),
        ],
    );
    let errors = validation_errors(&value, Mode::Publish);
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    for field in [
        "nodes.pay.data.amount_minor",
        "edges.e3.target",
        "nodes.t2",
        "nodes.t",
        "nodes.end",
        "nodes.pay",
        "nodes.loose",
    ] {
        assert!(fields.contains(&field), "missing {field} in {errors:#?}");
    }
}

// ---------------------------------------------------------------- templates

#[test]
fn templates_are_publishable_and_round_trip() {
    let templates = templates();
    let keys: Vec<&str> = templates.iter().map(|(k, _, _)| *k).collect();
    assert_eq!(
        keys,
        [
            "enquiry_follow_up",
            "booking_onboarding",
            "final_details_countdown",
            "post_wedding_review"
        ]
    );
    for (key, title, value) in &templates {
        assert!(!title.is_empty());
        let doc = match JourneyDocument::parse(value) {
            Ok(doc) => doc,
            Err(e) => panic!("{key}: {e}"),
        };
        if let Err(e) = validate(&doc, Mode::Publish) {
            panic!("{key}: {e}");
        }
        assert_eq!(
            JourneyDocument::parse(&doc.to_json()).ok(),
            Some(doc),
            "{key}"
        );
    }
}

#[test]
fn post_wedding_review_skips_when_passed() {
    let (_, _, value) = templates()
        .into_iter()
        .find(|(k, _, _)| *k == "post_wedding_review")
        .unwrap_or_else(|| panic!("template missing"));
    let doc = parse(&value);
    assert!(matches!(
        doc.node("two-weeks-after").map(|n| &n.kind),
        Some(NodeKind::Wait(Wait::UntilDate {
            offset_days: 14,
            if_passed: IfPassed::Skip,
            ..
        }))
    ));
    assert_eq!(doc.next("two-weeks-after", None), Some("review-request"));
}

// ---------------------------------------------------------------- never panics

mod never_panics {
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    use crate::*;

    const IDS: &[&str] = &["t", "a", "b", "c", "d", "e", "f"];
    const BAD_IDS: &[&str] = &["bad id", "", "ghost"];
    const HANDLES: &[&str] = &["paid", "timeout", "event", "yes", "no", "other", "", "x"];

    /// Mostly ids of the pool, sometimes a malformed or unknown one when `mutate`.
    fn id(mutate: bool) -> BoxedStrategy<&'static str> {
        if mutate {
            prop_oneof![19 => prop::sample::select(IDS), 1 => prop::sample::select(BAD_IDS)].boxed()
        } else {
            prop::sample::select(IDS).boxed()
        }
    }

    /// One valid `data` per node type, to mutate.
    fn samples() -> Vec<(&'static str, Value)> {
        vec![
            ("trigger", json!({"trigger": {"kind": "manual"}})),
            (
                "trigger",
                json!({"trigger": {"kind": "cron", "expression": "0 9 * * MON"}}),
            ),
            (
                "trigger",
                json!({"trigger": {"kind": "date_reached", "date": "wedding_date", "offset_days": -30, "at": "09:00"}}),
            ),
            ("vendor_action", json!({"title": "Call"})),
            (
                "client_action",
                json!({"title": "Sign", "both_partners": true}),
            ),
            (
                "decision",
                json!({"conditions": [{"label": "yes", "when": "x > 1"}], "default_label": "no"}),
            ),
            (
                "email",
                json!({"to": "partner_a", "subject": "Hi", "text": "{{ a }}"}),
            ),
            ("email", json!({"to": "vendor", "template": "welcome"})),
            ("sms", json!({"to": "partner_b", "text": "Hi"})),
            ("notification", json!({"channel": "slack", "template": "t"})),
            (
                "payment",
                json!({"amount_minor": 100, "currency": "GBP", "timeout_days": 3}),
            ),
            ("webhook", json!({"event_type": "a.b"})),
            ("task", json!({"title": "Do"})),
            (
                "crm_update",
                json!({"system": "tave", "fields": {"stage": "booked"}}),
            ),
            ("wait", json!({"mode": "duration", "seconds": 60})),
            (
                "wait",
                json!({"mode": "until_event", "event_type": "a.b", "timeout_seconds": 60}),
            ),
            (
                "wait",
                json!({"mode": "until_date", "date": "wedding_date", "offset_days": 1, "at": "10:00", "if_passed": "skip"}),
            ),
            ("end", json!({})),
        ]
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e9f64..1e9).prop_map(Value::from),
            "[a-z_.{}% :0-9]{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A sample's data; when `mutate`, sometimes with one key replaced, removed or added, or an
    /// unknown node type.
    fn data(mutate: bool) -> impl Strategy<Value = (&'static str, Value)> {
        (
            prop::sample::select(samples()),
            if mutate { 0usize..24 } else { 0usize..1 },
            any::<prop::sample::Index>(),
            any_json(),
        )
            .prop_map(|((node_type, mut data), op, index, value)| {
                if let Some(obj) = data.as_object_mut() {
                    let keys: Vec<String> = obj.keys().cloned().collect();
                    let key = (!keys.is_empty()).then(|| keys[index.index(keys.len())].clone());
                    match (op, key) {
                        (1, Some(key)) => {
                            obj.insert(key, value);
                        }
                        (2, Some(key)) => {
                            obj.remove(&key);
                        }
                        (3, _) => {
                            obj.insert("unexpected".into(), value);
                        }
                        (4, _) => return ("bogus", data),
                        _ => {}
                    }
                }
                (node_type, data)
            })
    }

    /// A node with transient UI fields; when `mutate`, sometimes without its position.
    fn node(mutate: bool) -> impl Strategy<Value = Value> {
        (id(mutate), data(mutate), any::<bool>(), 0u8..32).prop_map(
            move |(id, (node_type, data), selected, drop_position)| {
                let mut n =
                    json!({"id": id, "type": node_type, "data": data, "selected": selected});
                if !(mutate && drop_position == 0)
                    && let Some(obj) = n.as_object_mut()
                {
                    obj.insert("position".into(), json!({"x": 1, "y": 2}));
                }
                n
            },
        )
    }

    fn edge(mutate: bool) -> impl Strategy<Value = Value> {
        (
            id(mutate),
            id(mutate),
            id(mutate),
            prop::option::of(prop::sample::select(HANDLES)),
            prop::option::of(prop::sample::select(HANDLES)),
        )
            .prop_map(|(id, source, target, handle, label)| {
                let mut e = Map::new();
                e.insert("id".into(), format!("e-{id}").into());
                e.insert("source".into(), source.into());
                e.insert("target".into(), target.into());
                e.insert("animated".into(), true.into());
                if let Some(h) = handle {
                    e.insert("sourceHandle".into(), h.into());
                }
                if let Some(l) = label {
                    e.insert("label".into(), l.into());
                }
                Value::Object(e)
            })
    }

    fn check(value: &Value) -> Result<(), TestCaseError> {
        if let Ok(doc) = JourneyDocument::parse(value) {
            let _ = validate(&doc, Mode::Draft);
            let _ = validate(&doc, Mode::Publish);
            let _ = doc.trigger();
            for n in &doc.nodes {
                let _ = doc.next(&n.id, None);
                let _ = doc.next(&n.id, Some("timeout"));
            }
            prop_assert_eq!(JourneyDocument::parse(&doc.to_json()).ok(), Some(doc));
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn parse_and_validate_never_panic_on_document_shapes(
            nodes in prop::collection::vec(node(true), 0..8),
            edges in prop::collection::vec(edge(true), 0..14),
        ) {
            check(&json!({"nodes": nodes, "edges": edges, "viewport": {"x": 0, "y": 0, "zoom": 1}}))?;
        }

        #[test]
        fn validate_never_panics_on_well_formed_random_graphs(
            mut nodes in prop::collection::vec(node(false), 1..10),
            edges in prop::collection::vec(
                (any::<prop::sample::Index>(), any::<prop::sample::Index>(), prop::option::of(prop::sample::select(HANDLES))),
                0..16,
            ),
        ) {
            // Unique ids, a trigger first, and edges between existing nodes: graph rules get
            // exercised past the id and trigger checks.
            for (i, n) in nodes.iter_mut().enumerate() {
                n["id"] = format!("n{i}").into();
            }
            nodes[0]["type"] = "trigger".into();
            nodes[0]["data"] = json!({"trigger": {"kind": "manual"}});
            let edges: Vec<Value> = edges
                .iter()
                .enumerate()
                .map(|(k, (s, t, handle))| {
                    let (s, t) = (s.index(nodes.len()), t.index(nodes.len()));
                    json!({"id": format!("e{k}"), "source": format!("n{s}"), "target": format!("n{t}"), "sourceHandle": handle})
                })
                .collect();
            let value = json!({"nodes": nodes, "edges": edges});
            prop_assert!(JourneyDocument::parse(&value).is_ok(), "{value}");
            check(&value)?;
        }

        #[test]
        fn parse_never_panics_on_arbitrary_json(value in any_json()) {
            check(&value)?;
            check(&json!({"nodes": [value.clone()], "edges": [value]}))?;
        }
    }
}

#[test]
fn the_canvas_caption_is_kept_and_round_trips() {
    let mut with_label = email("e1");
    with_label["data"]["label"] = json!("Welcome email");
    let value = doc(
        vec![trigger("t"), with_label, end("x")],
        vec![edge("a", "t", "e1"), edge("b", "e1", "x")],
    );
    let parsed = parse(&value);
    assert_eq!(
        parsed.node("e1").and_then(|n| n.label.as_deref()),
        Some("Welcome email")
    );
    assert_eq!(parse(&parsed.to_json()), parsed);
    assert_eq!(
        parsed.to_json()["nodes"][1]["data"]["label"],
        "Welcome email"
    );
    let mut too_long = email("e1");
    too_long["data"]["label"] = json!("x".repeat(201));
    let errors = parse_errors(&doc(
        vec![trigger("t"), too_long],
        vec![edge("a", "t", "e1")],
    ));
    assert!(
        errors.iter().any(|e| e.field == "nodes.e1.data.label"),
        "{errors:?}"
    );
}
