//! Validation of a parsed journey on save ([`Mode::Draft`]) and on publish ([`Mode::Publish`]).
//!
//! Every error's `field` names the node (`nodes.<id>`, `nodes.<id>.data.<key>`) or the edge
//! (`edges.<id>`, `edges.<id>.source`, ...) it is about; all errors are collected.
//!
//! # Cycles
//! A cycle is allowed only when it passes through at least one *blocking* node — a `wait`, a
//! `client_action` or a `vendor_action` — because those pause on time or on a person, so a loop
//! cannot spin. A cycle made only of instant nodes (email, sms, notification, webhook, task,
//! crm_update, decision, payment request; trigger and end cannot be on a cycle) is an error naming
//! all its nodes. It is found exactly by taking the strongly connected components (Tarjan) of the
//! graph with the blocking nodes removed: any component of two or more nodes, or a node with an
//! edge to itself, holds an instant-only cycle. As a last guard the engine stops an instance
//! after [`MAX_STEPS_PER_INSTANCE`] steps.

use std::collections::{HashMap, HashSet, VecDeque};

use minijinja::Environment;
use serde_json::Value;

use crate::cron::check_cron;
use crate::document::{JourneyDocument, MAX_EDGES, MAX_NODES, Node, check_id};
use crate::model::{
    ClientAction, CrmSystem, CrmUpdate, Decision, Email, EmailContent, HANDLE_TIMEOUT, MessageBody,
    NodeKind, Notification, Outputs, Payment, Recipient, Sms, Subject, Task, Trigger, VendorAction,
    Wait, Webhook,
};
use wedsync_core::validate::ValidationErrors;

/// The runtime guard: the engine stops a journey instance after this many steps, so even a
/// permitted cycle (one through a blocking node) cannot run forever.
pub const MAX_STEPS_PER_INSTANCE: u32 = 1000;

/// Titles (vendor and client actions, tasks) are at most this many characters.
pub const MAX_TITLE_LEN: usize = 200;
/// Inline message texts and HTML are at most this many bytes.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Email subjects are at most this many characters.
pub const MAX_SUBJECT_LEN: usize = 255;
/// Descriptions, assignees and notification recipients are at most this many characters.
pub const MAX_SHORT_TEXT_LEN: usize = 500;
/// Decision labels are at most this many characters.
pub const MAX_LABEL_LEN: usize = 64;
/// Decision conditions are at most this many bytes.
pub const MAX_EXPRESSION_BYTES: usize = 4096;
/// A decision has at most this many conditions.
pub const MAX_CONDITIONS: usize = 32;
/// Day offsets (dates, task due dates) are within plus or minus this many days.
pub const MAX_OFFSET_DAYS: i32 = 3650;
/// Payment timeouts are at most this many days.
pub const MAX_TIMEOUT_DAYS: u32 = 3650;
/// Waits, delays and timeouts are at most this many seconds (ten years).
pub const MAX_DELAY_SECONDS: u64 = 3650 * 86_400;
/// Event types are at most this many characters.
pub const MAX_EVENT_TYPE_LEN: usize = 128;
/// Template names, form ids and date field names are at most this many characters.
pub const MAX_NAME_LEN: usize = 128;

/// When validation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// On save: structure and node data must be sound; loose nodes and missing outputs are fine.
    Draft,
    /// On publish: additionally every node is reachable from the trigger and every required
    /// output has its edge.
    Publish,
}

/// Validates a journey, collecting every error. See the module docs for the cycle rule.
pub fn validate(doc: &JourneyDocument, mode: Mode) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::default();
    if doc.nodes.len() > MAX_NODES {
        errors.add("nodes", format!("at most {MAX_NODES} nodes are allowed"));
    }
    if doc.edges.len() > MAX_EDGES {
        errors.add("edges", format!("at most {MAX_EDGES} edges are allowed"));
    }
    let subject = doc.subject();
    for node in &doc.nodes {
        check_node_data(node, subject, &mut errors);
    }
    let graph = Graph::build(doc, &mut errors);
    graph.check_triggers(doc, &mut errors);
    graph.check_outputs(doc, mode, &mut errors);
    if mode == Mode::Publish {
        graph.check_reachable(doc, &mut errors);
        // A step that could not run is refused before it is live.
        for node in &doc.nodes {
            if let NodeKind::CrmUpdate(c) = &node.kind
                && c.system == CrmSystem::Tave
            {
                errors.add(
                    format!("nodes.{}.data.system", node.id),
                    "WedSync writes to HubSpot and Salesforce only for now; this step could not run",
                );
            }
        }
    }
    graph.check_cycles(doc, &mut errors);
    errors.into_result(())
}

/// The journey as an index graph over the first node of each id, without dangling edges.
struct Graph {
    /// Per node index: the (edge index, target node index) pairs leaving it.
    out: Vec<Vec<(usize, usize)>>,
    /// Per node index: the (edge index, source node index) pairs entering it.
    inc: Vec<Vec<(usize, usize)>>,
    /// Whether the node is the first with its id (later duplicates are left out of the graph).
    first: Vec<bool>,
}

impl Graph {
    fn build(doc: &JourneyDocument, errors: &mut ValidationErrors) -> Self {
        let n = doc.nodes.len();
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut first = vec![false; n];
        for (i, node) in doc.nodes.iter().enumerate() {
            if let Err(message) = check_id(&node.id) {
                errors.add(format!("nodes[{i}].id"), message);
            }
            match index.get(node.id.as_str()) {
                Some(&j) => errors.add(
                    format!("nodes.{}", node.id),
                    format!("duplicate node id: nodes[{j}] and nodes[{i}] share it"),
                ),
                None => {
                    index.insert(&node.id, i);
                    first[i] = true;
                }
            }
        }
        let mut edge_ids: HashMap<&str, usize> = HashMap::new();
        let mut out = vec![Vec::new(); n];
        let mut inc = vec![Vec::new(); n];
        for (e, edge) in doc.edges.iter().enumerate() {
            if let Err(message) = check_id(&edge.id) {
                errors.add(format!("edges[{e}].id"), message);
            }
            if let Some(&other) = edge_ids.get(edge.id.as_str()) {
                errors.add(
                    format!("edges.{}", edge.id),
                    format!("duplicate edge id: edges[{other}] and edges[{e}] share it"),
                );
            } else {
                edge_ids.insert(&edge.id, e);
            }
            let source = index.get(edge.source.as_str()).copied();
            let target = index.get(edge.target.as_str()).copied();
            if source.is_none() {
                errors.add(
                    format!("edges.{}.source", edge.id),
                    format!("node `{}` does not exist", edge.source),
                );
            }
            if target.is_none() {
                errors.add(
                    format!("edges.{}.target", edge.id),
                    format!("node `{}` does not exist", edge.target),
                );
            }
            if let (Some(s), Some(t)) = (source, target) {
                out[s].push((e, t));
                inc[t].push((e, s));
            }
        }
        Self { out, inc, first }
    }

    fn triggers(&self, doc: &JourneyDocument) -> Vec<usize> {
        (0..doc.nodes.len())
            .filter(|&i| self.first[i] && matches!(doc.nodes[i].kind, NodeKind::Trigger(_)))
            .collect()
    }

    fn check_triggers(&self, doc: &JourneyDocument, errors: &mut ValidationErrors) {
        let triggers = self.triggers(doc);
        match triggers.as_slice() {
            [] => errors.add(
                "nodes",
                "a journey needs exactly one trigger node, found none",
            ),
            [first, rest @ ..] => {
                for &extra in rest {
                    errors.add(
                        format!("nodes.{}", doc.nodes[extra].id),
                        format!(
                            "a journey has exactly one trigger node; `{}` is already the trigger",
                            doc.nodes[*first].id
                        ),
                    );
                }
            }
        }
        for &t in &triggers {
            if !self.inc[t].is_empty() {
                errors.add(
                    format!("nodes.{}", doc.nodes[t].id),
                    format!(
                        "a trigger cannot have incoming edges, found {}",
                        edge_list(doc, &self.inc[t])
                    ),
                );
            }
        }
    }

    fn check_outputs(&self, doc: &JourneyDocument, mode: Mode, errors: &mut ValidationErrors) {
        for (i, node) in doc.nodes.iter().enumerate() {
            if !self.first[i] {
                continue;
            }
            let prefix = format!("nodes.{}", node.id);
            let out = &self.out[i];
            let type_name = node.kind.type_name();
            match node.kind.outputs() {
                Outputs::Terminal => {
                    if !out.is_empty() {
                        errors.add(
                            prefix,
                            format!(
                                "an end node cannot have outgoing edges, found {}",
                                edge_list(doc, out)
                            ),
                        );
                    }
                }
                Outputs::Single => {
                    for &(e, _) in out {
                        let edge = &doc.edges[e];
                        if let Some(handle) = &edge.source_handle {
                            errors.add(
                                format!("edges.{}.sourceHandle", edge.id),
                                format!(
                                    "node `{}` ({type_name}) has a single output, not `{handle}`",
                                    node.id
                                ),
                            );
                        }
                    }
                    if out.len() > 1 {
                        errors.add(
                            prefix,
                            format!(
                                "a {type_name} node has at most one outgoing edge, found {}",
                                edge_list(doc, out)
                            ),
                        );
                    } else if out.is_empty() && mode == Mode::Publish {
                        errors.add(prefix, "needs an outgoing edge");
                    }
                }
                Outputs::Branches(handles) => {
                    self.check_branches(doc, node, &handles, out, mode, errors);
                }
            }
        }
    }

    fn check_branches(
        &self,
        doc: &JourneyDocument,
        node: &Node,
        handles: &[&str],
        out: &[(usize, usize)],
        mode: Mode,
        errors: &mut ValidationErrors,
    ) {
        let prefix = format!("nodes.{}", node.id);
        let type_name = node.kind.type_name();
        let expected = handles
            .iter()
            .map(|h| format!("`{h}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut by_handle: HashMap<&str, Vec<(usize, usize)>> = HashMap::new();
        for &(e, t) in out {
            let edge = &doc.edges[e];
            match edge.output() {
                Some(h) if handles.contains(&h) => by_handle.entry(h).or_default().push((e, t)),
                Some(h) => {
                    let hint = match &node.kind {
                        NodeKind::Payment(_) if h == HANDLE_TIMEOUT => {
                            " (set `timeout_days` to use it)"
                        }
                        _ => "",
                    };
                    errors.add(
                        format!("edges.{}.sourceHandle", edge.id),
                        format!(
                            "node `{}` ({type_name}) has no output `{h}`{hint}; expected one of {expected}",
                            node.id
                        ),
                    );
                }
                None => errors.add(
                    format!("edges.{}.sourceHandle", edge.id),
                    format!(
                        "an edge leaving `{}` ({type_name}) must name one of its outputs: {expected}",
                        node.id
                    ),
                ),
            }
        }
        let mut seen = HashSet::new();
        for (k, &handle) in handles.iter().enumerate() {
            if !seen.insert(handle) {
                // A duplicate decision label; reported by the data check.
                continue;
            }
            let field = match &node.kind {
                NodeKind::Decision(d) if k < d.conditions.len() => {
                    format!("{prefix}.data.conditions[{k}].label")
                }
                NodeKind::Decision(_) => format!("{prefix}.data.default_label"),
                _ => prefix.clone(),
            };
            match by_handle.get(handle).map(Vec::as_slice) {
                None | Some([]) => {
                    if mode == Mode::Publish {
                        errors.add(field, format!("no outgoing edge for output `{handle}`"));
                    }
                }
                Some([_]) => {}
                Some(edges) => errors.add(
                    field,
                    format!(
                        "output `{handle}` must have exactly one outgoing edge, found {}",
                        edge_list(doc, edges)
                    ),
                ),
            }
        }
    }

    fn check_reachable(&self, doc: &JourneyDocument, errors: &mut ValidationErrors) {
        let Some(&start) = self.triggers(doc).first() else {
            return;
        };
        let mut reached = vec![false; doc.nodes.len()];
        reached[start] = true;
        let mut queue = VecDeque::from([start]);
        while let Some(i) = queue.pop_front() {
            for &(_, t) in &self.out[i] {
                if !reached[t] {
                    reached[t] = true;
                    queue.push_back(t);
                }
            }
        }
        for (i, node) in doc.nodes.iter().enumerate() {
            if self.first[i] && !reached[i] {
                errors.add(
                    format!("nodes.{}", node.id),
                    "is not reachable from the trigger",
                );
            }
        }
    }

    fn check_cycles(&self, doc: &JourneyDocument, errors: &mut ValidationErrors) {
        let instant = |i: usize| !doc.nodes[i].kind.is_blocking();
        let adjacency: Vec<Vec<usize>> = (0..doc.nodes.len())
            .map(|i| {
                if !instant(i) {
                    return Vec::new();
                }
                self.out[i]
                    .iter()
                    .map(|&(_, t)| t)
                    .filter(|&t| instant(t))
                    .collect()
            })
            .collect();
        let mut cycles: Vec<Vec<usize>> = strongly_connected(&adjacency)
            .into_iter()
            .filter(|c| match c.as_slice() {
                [single] => adjacency[*single].contains(single),
                _ => true,
            })
            .collect();
        for cycle in &mut cycles {
            cycle.sort_unstable();
        }
        cycles.sort_unstable();
        for cycle in cycles {
            let names = cycle
                .iter()
                .map(|&i| format!("`{}`", doc.nodes[i].id))
                .collect::<Vec<_>>()
                .join(", ");
            let Some(&head) = cycle.first() else {
                continue;
            };
            errors.add(
                format!("nodes.{}", doc.nodes[head].id),
                format!(
                    "nodes {names} form a cycle with no wait, client_action or vendor_action node, \
                     so it would run without pausing"
                ),
            );
        }
    }
}

fn edge_list(doc: &JourneyDocument, edges: &[(usize, usize)]) -> String {
    let ids: Vec<&str> = edges
        .iter()
        .map(|&(e, _)| doc.edges[e].id.as_str())
        .collect();
    format!("{} ({})", edges.len(), ids.join(", "))
}

/// Tarjan's strongly connected components, iteratively (no recursion depth limit).
fn strongly_connected(adjacency: &[Vec<usize>]) -> Vec<Vec<usize>> {
    const UNVISITED: usize = usize::MAX;
    let n = adjacency.len();
    let mut index = vec![UNVISITED; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut next_index = 0;
    let mut components = Vec::new();
    for root in 0..n {
        if index[root] != UNVISITED {
            continue;
        }
        index[root] = next_index;
        low[root] = next_index;
        next_index += 1;
        stack.push(root);
        on_stack[root] = true;
        // (node, position in its adjacency list)
        let mut calls = vec![(root, 0usize)];
        while let Some(frame) = calls.last_mut() {
            let v = frame.0;
            if let Some(&w) = adjacency[v].get(frame.1) {
                frame.1 += 1;
                if index[w] == UNVISITED {
                    index[w] = next_index;
                    low[w] = next_index;
                    next_index += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    calls.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
            } else {
                calls.pop();
                if let Some(&(parent, _)) = calls.last() {
                    low[parent] = low[parent].min(low[v]);
                }
                if low[v] == index[v] {
                    let mut component = Vec::new();
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        component.push(w);
                        if w == v {
                            break;
                        }
                    }
                    components.push(component);
                }
            }
        }
    }
    components
}

/// Checks a node's typed data, naming `nodes.<id>.data.<key>`.
fn check_node_data(node: &Node, subject: Subject, errors: &mut ValidationErrors) {
    let c = Check {
        prefix: format!("nodes.{}.data", node.id),
        subject,
        errors,
    };
    c.node(&node.kind);
}

struct Check<'a> {
    prefix: String,
    /// What the journey is about: it decides which dates exist.
    subject: Subject,
    errors: &'a mut ValidationErrors,
}

impl Check<'_> {
    fn field(&self, key: &str) -> String {
        format!("{}.{key}", self.prefix)
    }

    fn add(&mut self, key: &str, message: impl Into<String>) {
        let field = self.field(key);
        self.errors.add(field, message);
    }

    fn node(mut self, kind: &NodeKind) {
        match kind {
            NodeKind::Trigger(t) => self.trigger(&t.trigger),
            NodeKind::VendorAction(VendorAction { title, assignee }) => {
                self.title("title", title);
                self.optional_text("assignee", assignee.as_deref(), MAX_SHORT_TEXT_LEN);
            }
            NodeKind::ClientAction(ClientAction { title, form_id, .. }) => {
                self.title("title", title);
                if let Some(form_id) = form_id {
                    self.name("form_id", form_id);
                }
            }
            NodeKind::Decision(d) => self.decision(d),
            NodeKind::Email(Email { content, .. }) => match content {
                EmailContent::Template { name } => self.name("template", name),
                EmailContent::Inline {
                    subject,
                    text,
                    html,
                } => {
                    self.template("subject", subject, MAX_SUBJECT_LEN);
                    self.template("text", text, MAX_TEXT_BYTES);
                    if let Some(html) = html {
                        self.template("html", html, MAX_TEXT_BYTES);
                    }
                }
            },
            NodeKind::Sms(Sms { body, .. }) => self.body(body),
            NodeKind::Notification(Notification { body, to, .. }) => {
                self.body(body);
                self.optional_text("to", to.as_deref(), MAX_SHORT_TEXT_LEN);
            }
            NodeKind::Payment(p) => self.payment(p),
            NodeKind::Webhook(Webhook { event_type, .. }) => {
                self.event_type("event_type", event_type);
            }
            NodeKind::Task(Task {
                title,
                due_offset_days,
                assignee,
            }) => {
                self.title("title", title);
                if let Some(days) = due_offset_days {
                    self.offset_days("due_offset_days", *days);
                }
                self.optional_text("assignee", assignee.as_deref(), MAX_SHORT_TEXT_LEN);
            }
            NodeKind::CrmUpdate(CrmUpdate {
                fields, contacts, ..
            }) => {
                if fields.is_empty() {
                    self.add("fields", "must name at least one field");
                }
                for (key, value) in fields {
                    if key.trim().is_empty() || key.chars().count() > MAX_NAME_LEN {
                        self.add(
                            "fields",
                            format!("field names must be 1 to {MAX_NAME_LEN} characters"),
                        );
                        break;
                    }
                    if let Value::String(source) = value
                        && let Err(e) = Environment::new().template_from_str(source)
                    {
                        self.add(
                            &format!("fields.{key}"),
                            format!("is not a valid MiniJinja template: {e}"),
                        );
                    }
                }
                if *contacts == Recipient::Vendor {
                    self.add(
                        "contacts",
                        "a CRM update is about the couple: partner_a, partner_b or both_partners",
                    );
                }
            }
            NodeKind::Wait(w) => self.wait(w),
            NodeKind::End(_) => {}
        }
    }

    fn trigger(&mut self, trigger: &Trigger) {
        match trigger {
            Trigger::Event { event_type, .. } => self.event_type("trigger.event_type", event_type),
            Trigger::FormSubmission {
                form_id: Some(form_id),
            } => self.name("trigger.form_id", form_id),
            Trigger::DateReached {
                date, offset_days, ..
            } => {
                self.date_field("trigger.date", date);
                self.offset_days("trigger.offset_days", *offset_days);
            }
            Trigger::TimeDelay { after_seconds } => {
                self.seconds("trigger.after_seconds", *after_seconds);
                self.couple_only("time_delay");
            }
            Trigger::Cron { expression, .. } => {
                self.couple_only("cron");
                if let Err(e) = check_cron(expression) {
                    self.add(
                        "trigger.expression",
                        format!("invalid cron expression: {e}"),
                    );
                }
            }
            Trigger::FormSubmission { form_id: None }
            | Trigger::PaymentReceived {}
            | Trigger::Manual {} => {}
        }
    }

    fn decision(&mut self, decision: &Decision) {
        if decision.conditions.is_empty() {
            self.add("conditions", "needs at least one condition");
        } else if decision.conditions.len() > MAX_CONDITIONS {
            self.add(
                "conditions",
                format!("at most {MAX_CONDITIONS} conditions are allowed"),
            );
        }
        let mut labels: HashMap<&str, String> = HashMap::new();
        let all = decision
            .conditions
            .iter()
            .enumerate()
            .map(|(k, c)| (format!("conditions[{k}].label"), c.label.as_str()))
            .chain(std::iter::once((
                "default_label".to_owned(),
                decision.default_label.as_str(),
            )));
        for (key, label) in all {
            if label.trim().is_empty() {
                self.add(&key, "must not be empty");
            } else if label.chars().count() > MAX_LABEL_LEN {
                self.add(&key, format!("must be at most {MAX_LABEL_LEN} characters"));
            } else if let Some(first) = labels.get(label) {
                let message = format!("duplicate label `{label}` (also {first})");
                self.add(&key, message);
            } else {
                labels.insert(label, key);
            }
        }
        for (k, condition) in decision.conditions.iter().enumerate() {
            let key = format!("conditions[{k}].when");
            if condition.when.trim().is_empty() {
                self.add(&key, "must not be empty");
            } else if condition.when.len() > MAX_EXPRESSION_BYTES {
                self.add(
                    &key,
                    format!("must be at most {MAX_EXPRESSION_BYTES} bytes"),
                );
            } else if let Err(e) = Environment::new().compile_expression(&condition.when) {
                self.add(&key, format!("is not a valid MiniJinja expression: {e}"));
            }
        }
    }

    fn payment(&mut self, payment: &Payment) {
        if payment.amount_minor == 0 {
            self.add("amount_minor", "must be greater than zero");
        }
        let currency = payment.currency.as_bytes();
        if currency.len() != 3 || !currency.iter().all(u8::is_ascii_uppercase) {
            self.add("currency", "must be three uppercase letters, e.g. GBP");
        }
        self.optional_text(
            "description",
            payment.description.as_deref(),
            MAX_SHORT_TEXT_LEN,
        );
        if let Some(days) = payment.timeout_days
            && !(1..=MAX_TIMEOUT_DAYS).contains(&days)
        {
            self.add(
                "timeout_days",
                format!("must be between 1 and {MAX_TIMEOUT_DAYS}"),
            );
        }
    }

    fn wait(&mut self, wait: &Wait) {
        match wait {
            Wait::Duration { seconds } => self.seconds("seconds", *seconds),
            Wait::UntilDate {
                date, offset_days, ..
            } => {
                self.date_field("date", date);
                self.offset_days("offset_days", *offset_days);
            }
            Wait::UntilEvent {
                event_type,
                timeout_seconds,
                ..
            } => {
                self.event_type("event_type", event_type);
                self.seconds("timeout_seconds", *timeout_seconds);
            }
        }
    }

    fn body(&mut self, body: &MessageBody) {
        match body {
            MessageBody::Template { name } => self.name("template", name),
            MessageBody::Text { text } => self.template("text", text, MAX_TEXT_BYTES),
        }
    }

    fn title(&mut self, key: &str, title: &str) {
        if title.trim().is_empty() {
            self.add(key, "must not be empty");
        } else if title.chars().count() > MAX_TITLE_LEN {
            self.add(key, format!("must be at most {MAX_TITLE_LEN} characters"));
        }
    }

    fn optional_text(&mut self, key: &str, text: Option<&str>, max: usize) {
        match text {
            Some(t) if t.trim().is_empty() => self.add(key, "must not be empty when given"),
            Some(t) if t.chars().count() > max => {
                self.add(key, format!("must be at most {max} characters"));
            }
            _ => {}
        }
    }

    /// A MiniJinja template source, limited in bytes (subjects: in characters).
    fn template(&mut self, key: &str, source: &str, max: usize) {
        let too_long = if key == "subject" {
            source.chars().count() > max
        } else {
            source.len() > max
        };
        if source.trim().is_empty() {
            self.add(key, "must not be empty");
        } else if too_long {
            let unit = if key == "subject" {
                "characters"
            } else {
                "bytes"
            };
            self.add(key, format!("must be at most {max} {unit}"));
        } else if let Err(e) = Environment::new().template_from_str(source) {
            self.add(key, format!("is not a valid MiniJinja template: {e}"));
        }
    }

    /// A template name or form id: 1–128 characters of `[A-Za-z0-9_.:-]`.
    fn name(&mut self, key: &str, name: &str) {
        if name.is_empty() || name.chars().count() > MAX_NAME_LEN {
            self.add(key, format!("must be 1 to {MAX_NAME_LEN} characters"));
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
        {
            self.add(
                key,
                "may only contain letters, digits, `_`, `.`, `:` and `-`",
            );
        }
    }

    /// Two or more dot-separated segments of `[a-z][a-z0-9_]*`, e.g. `payment.completed`.
    fn event_type(&mut self, key: &str, event_type: &str) {
        let segment_ok = |s: &str| {
            let mut bytes = s.bytes();
            bytes.next().is_some_and(|b| b.is_ascii_lowercase())
                && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if event_type.len() > MAX_EVENT_TYPE_LEN
            || !event_type.contains('.')
            || !event_type.split('.').all(segment_ok)
        {
            self.add(
                key,
                format!(
                    "`{event_type}` must be dot-separated lowercase segments like `payment.completed`"
                ),
            );
        }
    }

    /// A date the hub keeps for the journey's subject ([`Subject::date_fields`]).
    fn date_field(&mut self, key: &str, field: &str) {
        let known = self.subject.date_fields();
        if known.contains(&field) {
            return;
        }
        let message = if crate::model::DATE_FIELDS.contains(&field) {
            format!("`{field}` is a booking's date: set the trigger's subject to `booking`")
        } else {
            format!(
                "`{field}` is not a date the hub keeps; use one of: {}",
                known.join(", ")
            )
        };
        self.add(key, message);
    }

    /// Scheduled triggers that start per couple have no booking to start for.
    fn couple_only(&mut self, kind: &str) {
        if self.subject == Subject::Booking {
            self.add(
                "subject",
                format!(
                    "a `{kind}` trigger starts per couple; a journey about a booking starts from \
                     an event, a payment, a form, `date_reached` on a date, or by hand"
                ),
            );
        }
    }

    fn offset_days(&mut self, key: &str, days: i32) {
        if !(-MAX_OFFSET_DAYS..=MAX_OFFSET_DAYS).contains(&days) {
            self.add(
                key,
                format!("must be between -{MAX_OFFSET_DAYS} and {MAX_OFFSET_DAYS}"),
            );
        }
    }

    fn seconds(&mut self, key: &str, seconds: u64) {
        if !(1..=MAX_DELAY_SECONDS).contains(&seconds) {
            self.add(
                key,
                format!("must be between 1 and {MAX_DELAY_SECONDS} seconds"),
            );
        }
    }
}
