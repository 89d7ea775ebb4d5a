//! The journey document: React Flow's `{nodes, edges, viewport}` reduced to its durable fields.

use serde_json::{Map, Value, json};

use crate::model::{NODE_TYPES, NodeKind, Outputs, Position, Trigger, Viewport};
use wedsync_core::validate::ValidationErrors;

/// At most this many nodes in one journey.
pub const MAX_NODES: usize = 500;
/// At most this many edges in one journey.
pub const MAX_EDGES: usize = 2000;
/// Node and edge ids are 1 to this many characters of `[A-Za-z0-9_-]`.
pub const MAX_ID_LEN: usize = 64;
/// Source and target handle names are at most this many characters.
pub const MAX_HANDLE_LEN: usize = 64;
/// Edge labels are at most this many characters.
pub const MAX_EDGE_LABEL_LEN: usize = 200;

/// One step of a journey.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Unique within the journey, 1–64 characters of `[A-Za-z0-9_-]`.
    pub id: String,
    /// Where the editor draws it.
    pub position: Position,
    /// What it does: the node `type` and its typed `data`.
    pub kind: NodeKind,
    /// The caption the canvas shows (`data.label`, which React Flow editors add to every
    /// node); kept, because a person wrote it.
    pub label: Option<String>,
}

/// A connection from one node's output to another node.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    /// Unique within the journey, 1–64 characters of `[A-Za-z0-9_-]`.
    pub id: String,
    /// The node the edge leaves.
    pub source: String,
    /// The node the edge enters.
    pub target: String,
    /// The source node's output handle, for branching nodes.
    pub source_handle: Option<String>,
    /// The target node's input handle (kept for the editor, not interpreted).
    pub target_handle: Option<String>,
    /// A display label; names the output of a branching node that has no `source_handle`.
    pub label: Option<String>,
}

impl Edge {
    /// The output of a branching source node this edge leaves from: its `sourceHandle`, or its
    /// `label` when it has no handle.
    pub fn output(&self) -> Option<&str> {
        self.source_handle.as_deref().or(self.label.as_deref())
    }
}

/// A journey as edited on the canvas, holding only durable fields.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JourneyDocument {
    /// The steps.
    pub nodes: Vec<Node>,
    /// The connections.
    pub edges: Vec<Edge>,
    /// The canvas viewport.
    pub viewport: Viewport,
}

impl JourneyDocument {
    /// Parses React Flow's `toObject()` output. Transient UI fields of nodes and edges
    /// (`selected`, `dragging`, `measured`, `width`, `style`, ...) and unknown top-level keys are
    /// dropped; each node's `data` is parsed strictly by its `type`, so unknown `data` keys are
    /// errors naming the node. This checks shape only; [`crate::validate`] checks the meaning.
    pub fn parse(value: &Value) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let Some(root) = value.as_object() else {
            return Err(ValidationErrors::single(
                "document",
                "must be a JSON object",
            ));
        };
        let nodes = array(root, "nodes", &mut errors);
        let edges = array(root, "edges", &mut errors);
        if nodes.len() > MAX_NODES {
            errors.add(
                "nodes",
                format!(
                    "at most {MAX_NODES} nodes are allowed, found {}",
                    nodes.len()
                ),
            );
        }
        if edges.len() > MAX_EDGES {
            errors.add(
                "edges",
                format!(
                    "at most {MAX_EDGES} edges are allowed, found {}",
                    edges.len()
                ),
            );
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let viewport = match root.get("viewport") {
            None | Some(Value::Null) => Viewport::default(),
            Some(v) => parse_viewport(v, &mut errors),
        };
        let nodes = nodes
            .iter()
            .enumerate()
            .filter_map(|(i, v)| parse_node(i, v, &mut errors))
            .collect();
        let edges = edges
            .iter()
            .enumerate()
            .filter_map(|(i, v)| parse_edge(i, v, &mut errors))
            .collect();
        errors.into_result(Self {
            nodes,
            edges,
            viewport,
        })
    }

    /// The document as React Flow JSON with only durable fields; `parse` reads it back unchanged.
    pub fn to_json(&self) -> Value {
        let nodes: Vec<Value> = self.nodes.iter().map(node_json).collect();
        let edges: Vec<Value> = self.edges.iter().map(edge_json).collect();
        json!({
            "nodes": nodes,
            "edges": edges,
            "viewport": {"x": self.viewport.x, "y": self.viewport.y, "zoom": self.viewport.zoom},
        })
    }

    /// The trigger of the (first) trigger node.
    pub fn trigger(&self) -> Option<&Trigger> {
        self.nodes.iter().find_map(|n| match &n.kind {
            NodeKind::Trigger(t) => Some(&t.trigger),
            _ => None,
        })
    }

    /// What the journey's instances are about (its trigger node's `subject`).
    pub fn subject(&self) -> crate::model::Subject {
        self.nodes
            .iter()
            .find_map(|n| match &n.kind {
                NodeKind::Trigger(t) => Some(t.subject),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// The (first) node with this id.
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The edges leaving `from`, in document order.
    pub fn outgoing<'a, 'b>(
        &'a self,
        from: &'b str,
    ) -> impl Iterator<Item = &'a Edge> + use<'a, 'b> {
        self.edges.iter().filter(move |e| e.source == from)
    }

    /// The node the journey goes to from `from`: with `handle`, the target of the edge leaving
    /// `from` through that output (its `sourceHandle`, or its `label` when it has none); without,
    /// the target of the single edge of a plain node (`None` for branching nodes).
    pub fn next(&self, from: &str, handle: Option<&str>) -> Option<&str> {
        let edge = match handle {
            Some(handle) => self.outgoing(from).find(|e| e.output() == Some(handle)),
            None => match self.node(from).map(|n| n.kind.outputs()) {
                Some(Outputs::Single) => self.outgoing(from).next(),
                _ => None,
            },
        };
        edge.map(|e| e.target.as_str())
    }
}

/// Checks a node or edge id: 1–64 characters of `[A-Za-z0-9_-]`.
pub fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        Err(format!("must be 1 to {MAX_ID_LEN} characters"))
    } else if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Err("may only contain letters, digits, `_` and `-`".into())
    } else {
        Ok(())
    }
}

fn array<'a>(
    root: &'a Map<String, Value>,
    key: &str,
    errors: &mut ValidationErrors,
) -> &'a [Value] {
    match root.get(key) {
        Some(Value::Array(items)) => items,
        None => {
            errors.add(key, "is required");
            &[]
        }
        Some(_) => {
            errors.add(key, "must be an array");
            &[]
        }
    }
}

fn number(obj: &Map<String, Value>, key: &str, field: &str, errors: &mut ValidationErrors) -> f64 {
    match obj.get(key).and_then(Value::as_f64) {
        Some(n) => n,
        None => {
            errors.add(format!("{field}.{key}"), "must be a number");
            0.0
        }
    }
}

fn parse_viewport(value: &Value, errors: &mut ValidationErrors) -> Viewport {
    let Some(obj) = value.as_object() else {
        errors.add("viewport", "must be an object");
        return Viewport::default();
    };
    let viewport = Viewport {
        x: number(obj, "x", "viewport", errors),
        y: number(obj, "y", "viewport", errors),
        zoom: number(obj, "zoom", "viewport", errors),
    };
    if obj.get("zoom").is_some_and(Value::is_number) && viewport.zoom <= 0.0 {
        errors.add("viewport.zoom", "must be greater than zero");
    }
    viewport
}

/// The node's id when it is valid (then errors name `nodes.<id>`), else `nodes[<index>]`.
fn element_id(
    obj: &Map<String, Value>,
    list: &str,
    index: usize,
    errors: &mut ValidationErrors,
) -> (Option<String>, String) {
    let fallback = format!("{list}[{index}]");
    match obj.get("id") {
        Some(Value::String(id)) => match check_id(id) {
            Ok(()) => (Some(id.clone()), format!("{list}.{id}")),
            Err(message) => {
                errors.add(format!("{fallback}.id"), message);
                (None, fallback)
            }
        },
        Some(_) => {
            errors.add(format!("{fallback}.id"), "must be a string");
            (None, fallback)
        }
        None => {
            errors.add(format!("{fallback}.id"), "is required");
            (None, fallback)
        }
    }
}

fn parse_node(index: usize, value: &Value, errors: &mut ValidationErrors) -> Option<Node> {
    let Some(obj) = value.as_object() else {
        errors.add(format!("nodes[{index}]"), "must be an object");
        return None;
    };
    let (id, prefix) = element_id(obj, "nodes", index, errors);
    let type_name = match obj.get("type") {
        Some(Value::String(t)) if NODE_TYPES.contains(&t.as_str()) => Some(t.as_str()),
        Some(Value::String(t)) => {
            errors.add(
                format!("{prefix}.type"),
                format!(
                    "unknown node type `{t}`; expected one of {}",
                    NODE_TYPES.join(", ")
                ),
            );
            None
        }
        Some(_) => {
            errors.add(format!("{prefix}.type"), "must be a string");
            None
        }
        None => {
            errors.add(format!("{prefix}.type"), "is required");
            None
        }
    };
    let position = match obj.get("position") {
        Some(Value::Object(p)) => Some(Position {
            x: number(p, "x", &format!("{prefix}.position"), errors),
            y: number(p, "y", &format!("{prefix}.position"), errors),
        }),
        Some(_) => {
            errors.add(format!("{prefix}.position"), "must be an object");
            None
        }
        None => {
            errors.add(format!("{prefix}.position"), "is required");
            None
        }
    };
    let mut label = None;
    let data = match obj.get("data") {
        None | Some(Value::Null) => Some(Value::Object(Map::new())),
        Some(Value::Object(data)) => {
            let mut data = data.clone();
            match data.remove("label") {
                None | Some(Value::Null) => {}
                Some(Value::String(text)) if text.chars().count() <= 200 => label = Some(text),
                Some(_) => errors.add(
                    format!("{prefix}.data.label"),
                    "a caption of at most 200 characters",
                ),
            }
            Some(Value::Object(data))
        }
        Some(_) => {
            errors.add(format!("{prefix}.data"), "must be an object");
            None
        }
    };
    let kind = match (type_name, data) {
        (Some(type_name), Some(data)) => {
            match serde_json::from_value::<NodeKind>(json!({"type": type_name, "data": data})) {
                Ok(kind) => Some(kind),
                Err(e) => {
                    errors.add(format!("{prefix}.data"), e.to_string());
                    None
                }
            }
        }
        _ => None,
    };
    Some(Node {
        id: id?,
        position: position?,
        kind: kind?,
        label,
    })
}

/// A required string field of an edge, itself a valid id.
fn edge_ref(
    obj: &Map<String, Value>,
    key: &str,
    prefix: &str,
    errors: &mut ValidationErrors,
) -> Option<String> {
    let field = format!("{prefix}.{key}");
    match obj.get(key) {
        Some(Value::String(s)) => match check_id(s) {
            Ok(()) => Some(s.clone()),
            Err(message) => {
                errors.add(field, message);
                None
            }
        },
        Some(_) => {
            errors.add(field, "must be a string");
            None
        }
        None => {
            errors.add(field, "is required");
            None
        }
    }
}

/// An optional string field of an edge; `null` and `""` mean absent.
fn edge_text(
    obj: &Map<String, Value>,
    key: &str,
    max: usize,
    prefix: &str,
    errors: &mut ValidationErrors,
) -> Result<Option<String>, ()> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= max => Ok(Some(s.clone())),
        Some(Value::String(_)) => {
            errors.add(
                format!("{prefix}.{key}"),
                format!("must be at most {max} characters"),
            );
            Err(())
        }
        Some(_) => {
            errors.add(format!("{prefix}.{key}"), "must be a string or null");
            Err(())
        }
    }
}

fn parse_edge(index: usize, value: &Value, errors: &mut ValidationErrors) -> Option<Edge> {
    let Some(obj) = value.as_object() else {
        errors.add(format!("edges[{index}]"), "must be an object");
        return None;
    };
    let (id, prefix) = element_id(obj, "edges", index, errors);
    let source = edge_ref(obj, "source", &prefix, errors);
    let target = edge_ref(obj, "target", &prefix, errors);
    let source_handle = edge_text(obj, "sourceHandle", MAX_HANDLE_LEN, &prefix, errors);
    let target_handle = edge_text(obj, "targetHandle", MAX_HANDLE_LEN, &prefix, errors);
    let label = edge_text(obj, "label", MAX_EDGE_LABEL_LEN, &prefix, errors);
    Some(Edge {
        id: id?,
        source: source?,
        target: target?,
        source_handle: source_handle.ok()?,
        target_handle: target_handle.ok()?,
        label: label.ok()?,
    })
}

fn node_json(node: &Node) -> Value {
    // Serializing the typed data cannot fail: every map key is a string and numbers are finite.
    let mut data = match serde_json::to_value(&node.kind) {
        Ok(Value::Object(mut tagged)) => tagged.remove("data").unwrap_or_default(),
        _ => Value::Null,
    };
    if let (Some(label), Some(obj)) = (&node.label, data.as_object_mut()) {
        obj.insert("label".into(), label.clone().into());
    }
    json!({
        "id": node.id,
        "type": node.kind.type_name(),
        "position": {"x": node.position.x, "y": node.position.y},
        "data": data,
    })
}

fn edge_json(edge: &Edge) -> Value {
    let mut obj = Map::new();
    obj.insert("id".into(), edge.id.clone().into());
    obj.insert("source".into(), edge.source.clone().into());
    obj.insert("target".into(), edge.target.clone().into());
    for (key, value) in [
        ("sourceHandle", &edge.source_handle),
        ("targetHandle", &edge.target_handle),
        ("label", &edge.label),
    ] {
        if let Some(value) = value {
            obj.insert(key.into(), value.clone().into());
        }
    }
    Value::Object(obj)
}
