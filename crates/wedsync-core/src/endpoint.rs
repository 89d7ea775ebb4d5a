//! Outbound webhook endpoints: which events an endpoint receives (event-type patterns and a
//! payload filter), which extra headers it is sent, how its deliveries are signed, and the
//! limits on its URL, timeout and rate.
//!
//! Everything here is pure: parsing and checking when an endpoint is saved, matching when an
//! event is fanned out. The network-level SSRF check on the URL's resolved address belongs to
//! the sender, not to this module.
//!
//! # Event-type patterns
//!
//! Event types are dot-separated segments of `[a-z0-9_]`, e.g. `booking.created` or
//! `couple.wedding_date_changed` (see [`is_event_type`]). An [`EventPattern`] is either an
//! exact event type, or a prefix ending in a `*` segment: `booking.*` matches `booking.created`
//! and `booking.deposit.paid` (one *or more* further segments) but not `booking` itself, and
//! `*` alone matches every event type. [`subscribed`] treats an empty list as "everything".
//!
//! # Payload filters
//!
//! A [`Filter`] is a JSON object evaluated against an event's JSON payload, in the style of
//! Convoy's and Svix's filters:
//!
//! ```json
//! {
//!   "data.amount": {"$gte": 100, "$lt": 5000},
//!   "data.currency": "GBP",
//!   "$or": [
//!     {"data.couple.venue": {"$contains": "Manor"}},
//!     {"data.tags": {"$contains": "vip"}}
//!   ]
//! }
//! ```
//!
//! - Every key of an object must hold (AND). `{}` at the top level matches everything.
//! - A key not starting with `$` is a field path: segments separated by dots walk objects by
//!   key and arrays by zero-based index (`items.0.sku`). Arrays are never searched implicitly;
//!   use `$contains` for membership. A field whose own name contains a dot cannot be addressed.
//! - A field's value is either a literal, compared for equality, or an *operator object* whose
//!   keys all start with `$` (several operators must all hold). An object with no `$` keys is a
//!   literal; to compare against an object that has `$` keys, use `$eq`.
//! - Equality is JSON-typed and deep: `1 == 1.0`, `"1" != 1`, `null` equals only `null`, and a
//!   missing field equals nothing (use `$exists` to test presence).
//! - `$eq`, `$ne`: equal / not equal. `$ne` is exactly the negation of `$eq`, so it also holds
//!   when the field is missing.
//! - `$in`, `$nin`: the field equals / equals none of the values in an array. `$nin` holds for a
//!   missing field.
//! - `$gt`, `$gte`, `$lt`, `$lte`: the operand is a number or a string; numbers compare
//!   numerically, strings by Unicode code point (so RFC 3339 timestamps in the same offset
//!   compare chronologically). A missing field or a field of the other type never matches.
//! - `$exists`: `true` if the field is present (even as `null`), `false` if it is absent.
//! - `$contains`: the field is a string containing the (string) operand as a substring, or an
//!   array with an element equal to the operand.
//! - Filter-level `$and` and `$or` take a non-empty array of filters; `$not` takes one filter.
//!   They nest at most [`MAX_FILTER_DEPTH`] deep, and a filter holds at most
//!   [`MAX_FILTER_CONDITIONS`] field conditions (a literal or one operator each).
//!
//! [`Filter::parse`] reports every problem with a path such as
//! `filter.$or[1].data.amount.$in`, and a parsed filter serialises back to the JSON it came from
//! (key order included, with serde_json's `preserve_order`).
#![forbid(unsafe_code)]

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Number, Value};

use crate::validate::{FieldError, ValidationErrors};

// ---------------------------------------------------------------------------------------------
// Event types and patterns
// ---------------------------------------------------------------------------------------------

/// The longest event type or event pattern accepted, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 128;

/// How many event patterns one endpoint may subscribe to.
pub const MAX_EVENT_PATTERNS: usize = 100;

fn is_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Whether `event_type` is well formed: dot-separated, non-empty segments of `[a-z0-9_]`, at
/// most [`MAX_EVENT_TYPE_LEN`] bytes, e.g. `payment.completed`.
pub fn is_event_type(event_type: &str) -> bool {
    event_type.len() <= MAX_EVENT_TYPE_LEN && event_type.split('.').all(is_segment)
}

/// Which event types an endpoint subscribes to: an exact type such as `booking.created`, a
/// prefix such as `booking.*` (the `*` stands for one or more trailing segments), or `*` for
/// every event type.
///
/// Serialises as the pattern string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventPattern(String);

impl EventPattern {
    /// Parses a pattern, rejecting empty segments, characters other than `[a-z0-9_]`, a `*`
    /// that is not the whole last segment (`booking*`, `**`, `*.created`), and anything longer
    /// than [`MAX_EVENT_TYPE_LEN`].
    pub fn parse(pattern: &str) -> Result<Self, String> {
        if pattern.is_empty() {
            return Err("must not be empty".into());
        }
        if pattern.len() > MAX_EVENT_TYPE_LEN {
            return Err(format!("must be at most {MAX_EVENT_TYPE_LEN} characters"));
        }
        let segment_count = pattern.split('.').count();
        for (i, segment) in pattern.split('.').enumerate() {
            let last = i + 1 == segment_count;
            let problem = if segment.is_empty() {
                Some("segments between dots must not be empty")
            } else if segment == "*" && !last {
                Some("`*` may only be the last segment, as in booking.*")
            } else if segment.contains('*') && segment != "*" {
                Some("`*` must be a whole segment, as in booking.*")
            } else if segment != "*" && !is_segment(segment) {
                Some("segments may use only lowercase letters, digits and underscores")
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(format!("`{pattern}` is not an event pattern: {problem}"));
            }
        }
        Ok(Self(pattern.to_owned()))
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the pattern ends in `*` (and so matches a family of event types).
    pub fn is_wildcard(&self) -> bool {
        self.0.ends_with('*')
    }

    /// Whether `event_type` is selected by this pattern. A malformed event type (see
    /// [`is_event_type`]) matches nothing, not even `*`.
    pub fn matches(&self, event_type: &str) -> bool {
        if !is_event_type(event_type) {
            return false;
        }
        match self.0.strip_suffix('*') {
            // `prefix` is "" for `*` and ends with a dot otherwise; as the event type is well
            // formed, whatever follows the prefix is one or more whole segments.
            Some(prefix) => event_type.len() > prefix.len() && event_type.starts_with(prefix),
            None => event_type == self.0,
        }
    }
}

/// Whether an endpoint subscribed to `patterns` receives `event_type`. An empty list means
/// every (well-formed) event type, as if it were `["*"]`.
pub fn subscribed(patterns: &[EventPattern], event_type: &str) -> bool {
    if patterns.is_empty() {
        is_event_type(event_type)
    } else {
        patterns.iter().any(|p| p.matches(event_type))
    }
}

/// Parses an endpoint's `event_types` list, naming each bad entry `event_types[i]`. At most
/// [`MAX_EVENT_PATTERNS`] entries, with no exact duplicates.
pub fn parse_event_patterns<S: AsRef<str>>(
    patterns: &[S],
) -> Result<Vec<EventPattern>, ValidationErrors> {
    let mut errors = ValidationErrors::default();
    if patterns.len() > MAX_EVENT_PATTERNS {
        errors.add(
            "event_types",
            format!("must have at most {MAX_EVENT_PATTERNS} entries"),
        );
        return Err(errors);
    }
    let mut parsed: Vec<EventPattern> = Vec::with_capacity(patterns.len());
    for (i, raw) in patterns.iter().enumerate() {
        let field = format!("event_types[{i}]");
        match EventPattern::parse(raw.as_ref()) {
            Ok(pattern) => {
                if let Some(j) = parsed.iter().position(|p| *p == pattern) {
                    errors.add(field, format!("repeats event_types[{j}]"));
                }
                parsed.push(pattern);
            }
            Err(message) => errors.add(field, message),
        }
    }
    errors.into_result(parsed)
}

impl fmt::Display for EventPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for EventPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for EventPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EventPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(D::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------------
// Payload filters
// ---------------------------------------------------------------------------------------------

/// How deep `$and`, `$or` and `$not` may nest inside one another.
pub const MAX_FILTER_DEPTH: usize = 8;

/// How many field conditions (a literal, or one operator) one filter may hold.
pub const MAX_FILTER_CONDITIONS: usize = 64;

/// How many values one `$in` or `$nin` may list.
pub const MAX_FILTER_LIST_LEN: usize = 100;

/// The longest field path, in bytes.
pub const MAX_FILTER_PATH_LEN: usize = 256;

/// How deep arrays and objects may nest inside one literal operand.
pub const MAX_FILTER_LITERAL_DEPTH: usize = 16;

/// The field operators, in the order error messages list them.
const OPERATORS: &[&str] = &[
    "$eq",
    "$ne",
    "$in",
    "$nin",
    "$gt",
    "$gte",
    "$lt",
    "$lte",
    "$exists",
    "$contains",
];

/// A validated payload filter; see the [module documentation](self) for the language.
///
/// The default (empty) filter matches every payload. Serialises back to exactly the JSON it was
/// parsed from; deserialising validates like [`Filter::parse`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// The object's entries in source order; all must hold.
    clauses: Vec<Clause>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Clause {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Field(FieldPath, Test),
}

/// A dotted path, kept as written (for serialising) and split (for walking).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldPath {
    raw: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    key: String,
    /// The array index this segment denotes, when it is a canonical decimal (`0`, `17`; not
    /// `07`).
    index: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Test {
    /// A bare value: deep equality.
    Literal(Value),
    /// An operator object: all must hold.
    Ops(Vec<Op>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Eq(Value),
    Ne(Value),
    In(Vec<Value>),
    Nin(Vec<Value>),
    Cmp(CmpOp, Bound),
    Exists(bool),
    Contains(Value),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Gt,
    Gte,
    Lt,
    Lte,
}

/// The operand of an ordering operator.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Bound {
    Number(Number),
    String(String),
}

impl Filter {
    /// Validates a filter as sent by a client, reporting every problem under `filter…`.
    pub fn parse(value: Value) -> Result<Self, ValidationErrors> {
        let mut parser = FilterParser::default();
        let filter = parser.filter(value, "filter", 0);
        if parser.conditions > MAX_FILTER_CONDITIONS {
            parser.errors.add(
                "filter",
                format!(
                    "has {} conditions; at most {MAX_FILTER_CONDITIONS} are allowed",
                    parser.conditions
                ),
            );
        }
        parser.errors.into_result(filter)
    }

    /// Whether the filter is empty and so matches every payload.
    pub fn is_empty(&self) -> bool {
        self.clauses.is_empty()
    }

    /// Whether `payload` passes the filter. Never panics, whatever the payload's shape.
    pub fn matches(&self, payload: &Value) -> bool {
        self.clauses.iter().all(|clause| clause.matches(payload))
    }

    /// The filter as JSON, identical to what it was parsed from.
    pub fn to_json(&self) -> Value {
        Value::Object(self.clauses.iter().map(Clause::to_entry).collect())
    }
}

impl Serialize for Filter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Filter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Self::parse(value).map_err(D::Error::custom)
    }
}

impl Clause {
    fn matches(&self, payload: &Value) -> bool {
        match self {
            Clause::And(filters) => filters.iter().all(|f| f.matches(payload)),
            Clause::Or(filters) => filters.iter().any(|f| f.matches(payload)),
            Clause::Not(filter) => !filter.matches(payload),
            Clause::Field(path, test) => test.matches(path.resolve(payload)),
        }
    }

    fn to_entry(&self) -> (String, Value) {
        let filters = |fs: &[Filter]| Value::Array(fs.iter().map(Filter::to_json).collect());
        match self {
            Clause::And(fs) => ("$and".to_owned(), filters(fs)),
            Clause::Or(fs) => ("$or".to_owned(), filters(fs)),
            Clause::Not(f) => ("$not".to_owned(), f.to_json()),
            Clause::Field(path, test) => (path.raw.clone(), test.to_json()),
        }
    }
}

impl FieldPath {
    fn parse(raw: String) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("field path must not be empty".into());
        }
        if raw.len() > MAX_FILTER_PATH_LEN {
            return Err(format!(
                "field path must be at most {MAX_FILTER_PATH_LEN} characters"
            ));
        }
        if raw.split('.').any(str::is_empty) {
            return Err(format!(
                "`{raw}` is not a field path: segments between dots must not be empty, as in data.amount"
            ));
        }
        let segments = raw
            .split('.')
            .map(|key| Segment {
                key: key.to_owned(),
                index: array_index(key),
            })
            .collect();
        Ok(Self { raw, segments })
    }

    /// The value at this path, if every step exists.
    fn resolve<'a>(&self, payload: &'a Value) -> Option<&'a Value> {
        self.segments
            .iter()
            .try_fold(payload, |value, segment| match value {
                Value::Object(map) => map.get(&segment.key),
                Value::Array(items) => segment.index.and_then(|i| items.get(i)),
                _ => None,
            })
    }
}

/// A canonical decimal array index: `0`, or digits without a leading zero.
fn array_index(segment: &str) -> Option<usize> {
    let canonical = segment.bytes().all(|b| b.is_ascii_digit())
        && (segment == "0" || !segment.starts_with('0'));
    if canonical {
        segment.parse().ok()
    } else {
        None
    }
}

impl Test {
    fn matches(&self, found: Option<&Value>) -> bool {
        match self {
            Test::Literal(expected) => found.is_some_and(|v| json_eq(v, expected)),
            Test::Ops(ops) => ops.iter().all(|op| op.matches(found)),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Test::Literal(value) => value.clone(),
            Test::Ops(ops) => Value::Object(
                ops.iter()
                    .map(|op| (op.name().to_owned(), op.operand()))
                    .collect(),
            ),
        }
    }
}

impl Op {
    fn matches(&self, found: Option<&Value>) -> bool {
        let equals = |expected: &Value| found.is_some_and(|v| json_eq(v, expected));
        match self {
            Op::Eq(expected) => equals(expected),
            Op::Ne(expected) => !equals(expected),
            Op::In(values) => values.iter().any(equals),
            Op::Nin(values) => !values.iter().any(equals),
            Op::Cmp(op, bound) => found
                .and_then(|v| compare(v, bound))
                .is_some_and(|ordering| op.accepts(ordering)),
            Op::Exists(wanted) => found.is_some() == *wanted,
            Op::Contains(needle) => match found {
                Some(Value::String(haystack)) => {
                    needle.as_str().is_some_and(|n| haystack.contains(n))
                }
                Some(Value::Array(items)) => items.iter().any(|item| json_eq(item, needle)),
                _ => false,
            },
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Op::Eq(_) => "$eq",
            Op::Ne(_) => "$ne",
            Op::In(_) => "$in",
            Op::Nin(_) => "$nin",
            Op::Cmp(op, _) => op.name(),
            Op::Exists(_) => "$exists",
            Op::Contains(_) => "$contains",
        }
    }

    fn operand(&self) -> Value {
        match self {
            Op::Eq(v) | Op::Ne(v) | Op::Contains(v) => v.clone(),
            Op::In(values) | Op::Nin(values) => Value::Array(values.clone()),
            Op::Cmp(_, Bound::Number(n)) => Value::Number(n.clone()),
            Op::Cmp(_, Bound::String(s)) => Value::String(s.clone()),
            Op::Exists(b) => Value::Bool(*b),
        }
    }
}

impl CmpOp {
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "$gt" => Some(Self::Gt),
            "$gte" => Some(Self::Gte),
            "$lt" => Some(Self::Lt),
            "$lte" => Some(Self::Lte),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Gt => "$gt",
            Self::Gte => "$gte",
            Self::Lt => "$lt",
            Self::Lte => "$lte",
        }
    }

    /// Whether `field <op> operand` holds, given how the field compares to the operand.
    fn accepts(self, ordering: Ordering) -> bool {
        match self {
            Self::Gt => ordering == Ordering::Greater,
            Self::Gte => ordering != Ordering::Less,
            Self::Lt => ordering == Ordering::Less,
            Self::Lte => ordering != Ordering::Greater,
        }
    }
}

/// How `value` compares to `bound`, when both are numbers or both are strings.
fn compare(value: &Value, bound: &Bound) -> Option<Ordering> {
    match (value, bound) {
        (Value::Number(a), Bound::Number(b)) => cmp_numbers(a, b),
        (Value::String(a), Bound::String(b)) => Some(a.as_str().cmp(b.as_str())),
        _ => None,
    }
}

/// Deep JSON equality in which numbers compare by value (`1 == 1.0`) and object key order
/// does not matter. Recursion stops at the shallower side, and literals are depth-limited.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => cmp_numbers(x, y) == Some(Ordering::Equal),
        (Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(xs), Value::Object(ys)) => {
            xs.len() == ys.len()
                && xs
                    .iter()
                    .all(|(k, x)| ys.get(k).is_some_and(|y| json_eq(x, y)))
        }
        _ => a == b,
    }
}

/// Compares two JSON numbers exactly, whether each is stored as an integer or a float.
fn cmp_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    fn integer(n: &Number) -> Option<i128> {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    }
    match (integer(a), integer(b)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        (Some(x), None) => cmp_int_float(x, b.as_f64()?),
        (None, Some(y)) => cmp_int_float(y, a.as_f64()?).map(Ordering::reverse),
        (None, None) => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

/// Compares an integer with a float without the rounding of a plain `as f64`.
///
/// An integral float inside the `i128` range converts exactly. Otherwise the float is either
/// fractional (so smaller in magnitude than 2^52) or beyond ±2^127, and rounding the integer
/// (at most 2^64 in magnitude) to `f64` cannot move it past the float.
fn cmp_int_float(int: i128, float: f64) -> Option<Ordering> {
    const LIMIT: f64 = i128::MAX as f64; // 2^127
    if float.fract() == 0.0 && float > -LIMIT && float < LIMIT {
        Some(int.cmp(&(float as i128)))
    } else {
        (int as f64).partial_cmp(&float)
    }
}

/// Whether arrays and objects inside `value` nest more than `levels` deep (a scalar is 0 deep).
fn nested_deeper_than(value: &Value, levels: usize) -> bool {
    match value {
        Value::Array(items) => {
            levels == 0 || items.iter().any(|v| nested_deeper_than(v, levels - 1))
        }
        Value::Object(map) => {
            levels == 0 || map.values().any(|v| nested_deeper_than(v, levels - 1))
        }
        _ => false,
    }
}

/// Collects every problem in one filter, and counts its conditions.
#[derive(Default)]
struct FilterParser {
    errors: ValidationErrors,
    conditions: usize,
}

impl FilterParser {
    /// Parses a filter object at `depth` logical operators below the top.
    fn filter(&mut self, value: Value, at: &str, depth: usize) -> Filter {
        let Value::Object(map) = value else {
            self.errors.add(
                at,
                "must be a JSON object of conditions, such as {\"data.amount\": {\"$gt\": 100}}",
            );
            return Filter::default();
        };
        if depth > 0 && map.is_empty() {
            self.errors.add(at, "must have at least one condition");
        }
        let mut clauses = Vec::with_capacity(map.len());
        for (key, value) in map {
            let here = format!("{at}.{key}");
            let clause = match key.as_str() {
                "$and" => self.filters(value, &here, depth).map(Clause::And),
                "$or" => self.filters(value, &here, depth).map(Clause::Or),
                "$not" => self
                    .nested(value, &here, depth)
                    .map(|f| Clause::Not(Box::new(f))),
                op if op.starts_with('$') => {
                    let message = if OPERATORS.contains(&op) {
                        format!(
                            "`{op}` applies to a field; put it under a field path, as in {{\"data.amount\": {{\"{op}\": …}}}}"
                        )
                    } else {
                        format!(
                            "`{op}` is not a filter operator; expected $and, $or, $not or a field path such as data.amount"
                        )
                    };
                    self.errors.add(&here, message);
                    None
                }
                _ => self.field(key, value, &here),
            };
            clauses.extend(clause);
        }
        Filter { clauses }
    }

    /// The depth for filters nested under a logical operator at `at`, unless that is too deep.
    fn deeper(&mut self, at: &str, depth: usize) -> Option<usize> {
        if depth >= MAX_FILTER_DEPTH {
            self.errors.add(
                at,
                format!("nests $and, $or and $not more than {MAX_FILTER_DEPTH} levels deep"),
            );
            None
        } else {
            Some(depth + 1)
        }
    }

    fn nested(&mut self, value: Value, at: &str, depth: usize) -> Option<Filter> {
        let depth = self.deeper(at, depth)?;
        Some(self.filter(value, at, depth))
    }

    fn filters(&mut self, value: Value, at: &str, depth: usize) -> Option<Vec<Filter>> {
        let items = match value {
            Value::Array(items) if !items.is_empty() => items,
            _ => {
                self.errors.add(at, "must be a non-empty array of filters");
                return None;
            }
        };
        let depth = self.deeper(at, depth)?;
        Some(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| self.filter(item, &format!("{at}[{i}]"), depth))
                .collect(),
        )
    }

    fn field(&mut self, key: String, value: Value, at: &str) -> Option<Clause> {
        let path = match FieldPath::parse(key) {
            Ok(path) => Some(path),
            Err(message) => {
                self.errors.add(at, message);
                None
            }
        };
        let test = self.test(value, at);
        Some(Clause::Field(path?, test?))
    }

    fn test(&mut self, value: Value, at: &str) -> Option<Test> {
        match value {
            Value::Object(map) if map.keys().any(|k| k.starts_with('$')) => {
                if let Some(plain) = map.keys().find(|k| !k.starts_with('$')) {
                    self.errors.add(
                        at,
                        format!(
                            "mixes operators with the plain key `{plain}`; to compare with such an object use $eq"
                        ),
                    );
                    return None;
                }
                let mut ops = Vec::with_capacity(map.len());
                let mut all_valid = true;
                for (name, operand) in map {
                    match self.op(&name, operand, &format!("{at}.{name}")) {
                        Some(op) => ops.push(op),
                        None => all_valid = false,
                    }
                }
                all_valid.then_some(Test::Ops(ops))
            }
            literal => {
                let literal = self.literal(literal, at)?;
                self.conditions += 1;
                Some(Test::Literal(literal))
            }
        }
    }

    fn op(&mut self, name: &str, operand: Value, at: &str) -> Option<Op> {
        let op = match name {
            "$eq" => Op::Eq(self.literal(operand, at)?),
            "$ne" => Op::Ne(self.literal(operand, at)?),
            "$in" => Op::In(self.list(operand, at)?),
            "$nin" => Op::Nin(self.list(operand, at)?),
            "$exists" => match operand {
                Value::Bool(wanted) => Op::Exists(wanted),
                _ => {
                    self.errors.add(at, "must be true or false");
                    return None;
                }
            },
            "$contains" => Op::Contains(self.literal(operand, at)?),
            "$and" | "$or" | "$not" => {
                self.errors.add(
                    at,
                    format!(
                        "`{name}` combines whole filters; use it beside field paths, as in {{\"{name}\": …}}"
                    ),
                );
                return None;
            }
            _ => match CmpOp::from_name(name) {
                Some(cmp) => match operand {
                    Value::Number(n) => Op::Cmp(cmp, Bound::Number(n)),
                    Value::String(s) => Op::Cmp(cmp, Bound::String(s)),
                    _ => {
                        self.errors.add(at, "must be a number or a string");
                        return None;
                    }
                },
                None => {
                    self.errors.add(
                        at,
                        format!(
                            "`{name}` is not an operator; expected one of {}",
                            OPERATORS.join(", ")
                        ),
                    );
                    return None;
                }
            },
        };
        self.conditions += 1;
        Some(op)
    }

    fn literal(&mut self, value: Value, at: &str) -> Option<Value> {
        if nested_deeper_than(&value, MAX_FILTER_LITERAL_DEPTH) {
            self.errors.add(
                at,
                format!(
                    "nests arrays and objects more than {MAX_FILTER_LITERAL_DEPTH} levels deep"
                ),
            );
            None
        } else {
            Some(value)
        }
    }

    fn list(&mut self, value: Value, at: &str) -> Option<Vec<Value>> {
        let Value::Array(items) = value else {
            self.errors.add(at, "must be an array of values");
            return None;
        };
        if items.len() > MAX_FILTER_LIST_LEN {
            self.errors.add(
                at,
                format!("must list at most {MAX_FILTER_LIST_LEN} values"),
            );
            return None;
        }
        let mut valid = Vec::with_capacity(items.len());
        let mut all_valid = true;
        for (i, item) in items.into_iter().enumerate() {
            match self.literal(item, &format!("{at}[{i}]")) {
                Some(item) => valid.push(item),
                None => all_valid = false,
            }
        }
        all_valid.then_some(valid)
    }
}

// ---------------------------------------------------------------------------------------------
// Custom headers
// ---------------------------------------------------------------------------------------------

/// How many custom headers one endpoint may have.
pub const MAX_CUSTOM_HEADERS: usize = 20;

/// The longest custom header name, in bytes.
pub const MAX_HEADER_NAME_LEN: usize = 256;

/// The longest custom header value, in bytes.
pub const MAX_HEADER_VALUE_LEN: usize = 1024;

/// Headers WedSync sets on every delivery, which an endpoint may not override (lowercase).
const SET_BY_US: &[&str] = &["content-type", "user-agent"];

/// Prefixes of the signature headers WedSync sets (Standard Webhooks and Svix).
const SET_BY_US_PREFIXES: &[&str] = &["webhook-", "svix-"];

/// Headers that describe the connection or the body's framing; setting them by hand breaks
/// delivery (RFC 9110 §7.6.1 hop-by-hop headers, plus `host` and the body's length and coding).
const TRANSPORT: &[&str] = &[
    "host",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

/// RFC 9110 `tchar`: the characters of a header name.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn header_name_problem(name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    if name.is_empty() {
        Some("header name must not be empty".into())
    } else if name.len() > MAX_HEADER_NAME_LEN {
        Some(format!(
            "header name must be at most {MAX_HEADER_NAME_LEN} characters"
        ))
    } else if !name.bytes().all(is_tchar) {
        Some(format!(
            "`{name}` is not a header name: use letters, digits and !#$%&'*+-.^_`|~"
        ))
    } else if TRANSPORT.contains(&lower.as_str()) {
        Some(format!(
            "`{name}` is managed by the HTTP connection and cannot be set"
        ))
    } else if SET_BY_US.contains(&lower.as_str())
        || SET_BY_US_PREFIXES.iter().any(|p| lower.starts_with(p))
    {
        Some(format!(
            "`{name}` is set by WedSync on every delivery and cannot be overridden"
        ))
    } else {
        None
    }
}

fn header_value_problem(value: &str) -> Option<String> {
    if value.is_empty() {
        Some("header value must not be empty".into())
    } else if value.len() > MAX_HEADER_VALUE_LEN {
        Some(format!(
            "header value must be at most {MAX_HEADER_VALUE_LEN} bytes"
        ))
    } else if value.contains(['\r', '\n']) {
        Some("header value must not contain line breaks".into())
    } else if !value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        Some("header value must be printable ASCII".into())
    } else if value.starts_with([' ', '\t']) || value.ends_with([' ', '\t']) {
        Some("header value must not start or end with whitespace".into())
    } else {
        None
    }
}

/// Checks an endpoint's custom headers: at most [`MAX_CUSTOM_HEADERS`], names that are HTTP
/// tokens and unique ignoring case, none that WedSync sets itself or that break transport
/// (`host`, `content-type`, `webhook-*`, `svix-*`…), and values of printable ASCII (spaces and
/// tabs inside only) up to [`MAX_HEADER_VALUE_LEN`] bytes. Problems are named `headers.<name>`.
pub fn validate_headers(headers: &BTreeMap<String, String>) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::default();
    if headers.len() > MAX_CUSTOM_HEADERS {
        errors.add(
            "headers",
            format!(
                "must have at most {MAX_CUSTOM_HEADERS} headers, not {}",
                headers.len()
            ),
        );
    }
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for (name, value) in headers {
        let field = format!("headers.{name}");
        if let Some(problem) = header_name_problem(name) {
            errors.add(&field, problem);
        } else if let Some(first) = seen.insert(name.to_ascii_lowercase(), name) {
            errors.add(
                &field,
                format!("repeats the header `{first}`; header names ignore case"),
            );
        }
        if let Some(problem) = header_value_problem(value) {
            errors.add(&field, problem);
        }
    }
    errors.into_result(())
}

/// An endpoint's validated custom headers, sent with every delivery.
///
/// Values often carry credentials, so `Debug` shows names only. Serialises as a JSON object;
/// deserialising validates like [`CustomHeaders::parse`].
#[derive(Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct CustomHeaders(BTreeMap<String, String>);

impl CustomHeaders {
    /// Validates headers with [`validate_headers`].
    pub fn parse(headers: BTreeMap<String, String>) -> Result<Self, ValidationErrors> {
        validate_headers(&headers)?;
        Ok(Self(headers))
    }

    /// The headers, by name as written.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// How many headers there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for CustomHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CustomHeaders")?;
        f.debug_map()
            .entries(self.0.keys().map(|name| (name, "***")))
            .finish()
    }
}

impl<'de> Deserialize<'de> for CustomHeaders {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let headers = BTreeMap::deserialize(d)?;
        Self::parse(headers).map_err(D::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------------
// Signing secrets
// ---------------------------------------------------------------------------------------------

/// Why a secret could not be generated or parsed; messages are fit for a `FieldError`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The text does not start with `whsec_`.
    #[error("must start with whsec_")]
    MissingPrefix,
    /// What follows `whsec_` is not standard base64.
    #[error("must be standard base64 after whsec_")]
    NotBase64,
    /// The key is too short or too long.
    #[error(
        "key must be {min} to {max} bytes long, not {len}",
        min = EndpointSecret::MIN_LEN,
        max = EndpointSecret::MAX_LEN
    )]
    Length {
        /// The key length that was asked for or decoded.
        len: usize,
    },
}

/// An endpoint's signing key, written `whsec_` + standard base64 (the Standard Webhooks form).
///
/// `Debug` prints `EndpointSecret(***)`; there is deliberately no `Display` or `Serialize`, so
/// the key only leaves through [`EndpointSecret::expose`].
#[derive(Clone)]
pub struct EndpointSecret {
    key: Vec<u8>,
}

/// Standard base64 that accepts the padding or its absence, for secrets pasted by people.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

impl EndpointSecret {
    /// What every secret's text starts with.
    pub const PREFIX: &str = "whsec_";
    /// The shortest key, in bytes.
    pub const MIN_LEN: usize = 24;
    /// The longest key, in bytes.
    pub const MAX_LEN: usize = 64;
    /// The length of generated keys unless asked otherwise, in bytes.
    pub const DEFAULT_LEN: usize = 32;

    /// Generates a key of `len` random bytes from the thread-local CSPRNG (seeded by the OS).
    pub fn generate(len: usize) -> Result<Self, SecretError> {
        Self::generate_with(&mut rand::rng(), len)
    }

    /// Generates a key of `len` bytes from `rng`, for callers that inject their generator.
    pub fn generate_with<R: rand::CryptoRng + ?Sized>(
        rng: &mut R,
        len: usize,
    ) -> Result<Self, SecretError> {
        check_secret_len(len)?;
        let mut key = vec![0; len];
        rng.fill_bytes(&mut key);
        Ok(Self { key })
    }

    /// Parses a secret supplied by a user, e.g. one migrated from another webhook provider.
    /// Surrounding whitespace is ignored and base64 padding is optional.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let encoded = text
            .trim()
            .strip_prefix(Self::PREFIX)
            .ok_or(SecretError::MissingPrefix)?;
        let key = LENIENT_BASE64
            .decode(encoded)
            .map_err(|_| SecretError::NotBase64)?;
        check_secret_len(key.len())?;
        Ok(Self { key })
    }

    /// The raw key, for HMAC signing.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The `whsec_…` text (padded standard base64), for showing to its owner and for storing
    /// encrypted. Never log it.
    pub fn expose(&self) -> String {
        format!("{}{}", Self::PREFIX, STANDARD.encode(&self.key))
    }
}

fn check_secret_len(len: usize) -> Result<(), SecretError> {
    if (EndpointSecret::MIN_LEN..=EndpointSecret::MAX_LEN).contains(&len) {
        Ok(())
    } else {
        Err(SecretError::Length { len })
    }
}

impl fmt::Debug for EndpointSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EndpointSecret(***)")
    }
}

// ---------------------------------------------------------------------------------------------
// URL, timeout, rate limit
// ---------------------------------------------------------------------------------------------

/// The longest endpoint URL, in characters (before and after normalisation).
pub const MAX_URL_LEN: usize = 2048;

/// The allowed delivery timeout, in milliseconds.
pub const TIMEOUT_MS: RangeInclusive<u32> = 1_000..=30_000;

/// The allowed per-endpoint rate limit, in requests per second.
pub const RATE_LIMIT_PER_SECOND: RangeInclusive<u32> = 1..=10_000;

/// Parses and checks an endpoint URL (the field `url`): absolute `http` or `https` with a host,
/// no fragment, no `user:password@` credentials, at most [`MAX_URL_LEN`] characters. Whether
/// the host resolves to an allowed address is checked when sending.
pub fn validate_endpoint_url(raw: &str) -> Result<url::Url, FieldError> {
    let fail = |message: String| FieldError {
        field: "url".into(),
        message,
    };
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(fail("must not be empty".into()));
    }
    if raw.chars().count() > MAX_URL_LEN {
        return Err(fail(format!("must be at most {MAX_URL_LEN} characters")));
    }
    let url = url::Url::parse(raw)
        .map_err(|e| fail(format!("is not an absolute http or https URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(fail(format!(
            "must use http or https, not {}",
            url.scheme()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(fail(
            "must not contain a user name or password; send credentials in a custom header such as Authorization instead"
                .into(),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(fail("must have a host".into()));
    }
    if url.fragment().is_some() {
        return Err(fail(
            "must not have a #fragment; it is never sent to the server".into(),
        ));
    }
    if url.as_str().len() > MAX_URL_LEN {
        return Err(fail(format!(
            "must be at most {MAX_URL_LEN} characters once normalised"
        )));
    }
    Ok(url)
}

fn within(
    field: &str,
    value: u32,
    range: RangeInclusive<u32>,
    unit: &str,
) -> Result<(), ValidationErrors> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(ValidationErrors::single(
            field,
            format!(
                "must be between {} and {} {unit}",
                range.start(),
                range.end()
            ),
        ))
    }
}

/// Checks a delivery timeout (the field `timeout_ms`) lies in [`TIMEOUT_MS`].
pub fn validate_timeout_ms(timeout_ms: u32) -> Result<(), ValidationErrors> {
    within("timeout_ms", timeout_ms, TIMEOUT_MS, "milliseconds")
}

/// Checks a rate limit (the field `rate_limit`) lies in [`RATE_LIMIT_PER_SECOND`].
pub fn validate_rate_limit(per_second: u32) -> Result<(), ValidationErrors> {
    within(
        "rate_limit",
        per_second,
        RATE_LIMIT_PER_SECOND,
        "requests per second",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng as _;
    use serde_json::json;

    // ----- event patterns -------------------------------------------------------------------

    #[test]
    fn pattern_parsing() {
        let long = "a".repeat(MAX_EVENT_TYPE_LEN + 1);
        let longest = "a".repeat(MAX_EVENT_TYPE_LEN);
        let cases: &[(&str, Result<(), &str>)] = &[
            ("booking.created", Ok(())),
            ("couple.wedding_date_changed", Ok(())),
            ("stripe.raw", Ok(())),
            ("payment_2.completed", Ok(())),
            ("ping", Ok(())),
            ("*", Ok(())),
            ("booking.*", Ok(())),
            ("booking.deposit.*", Ok(())),
            (&longest, Ok(())),
            ("", Err("must not be empty")),
            (&long, Err("at most 128 characters")),
            ("Booking.created", Err("lowercase letters")),
            ("booking-created", Err("lowercase letters")),
            ("booking created", Err("lowercase letters")),
            ("booking..created", Err("must not be empty")),
            (".booking", Err("must not be empty")),
            ("booking.", Err("must not be empty")),
            ("**", Err("whole segment")),
            ("booking.**", Err("whole segment")),
            ("booking*", Err("whole segment")),
            ("booking.cre*", Err("whole segment")),
            ("*.created", Err("last segment")),
            ("booking.*.paid", Err("last segment")),
            ("*.*", Err("last segment")),
        ];
        for (input, expected) in cases {
            match (EventPattern::parse(input), expected) {
                (Ok(p), Ok(())) => assert_eq!(p.as_str(), *input),
                (Err(message), Err(fragment)) => assert!(
                    message.contains(fragment),
                    "{input:?}: {message:?} lacks {fragment:?}"
                ),
                (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn pattern_matching() {
        let cases = [
            ("booking.created", "booking.created", true),
            ("booking.created", "booking.created.late", false),
            ("booking.created", "booking", false),
            ("booking.created", "booking.cancelled", false),
            ("booking.*", "booking.created", true),
            ("booking.*", "booking.deposit.paid", true),
            ("booking.*", "booking", false),
            ("booking.*", "bookings.created", false),
            ("booking.*", "payment.completed", false),
            ("booking.deposit.*", "booking.deposit.paid", true),
            ("booking.deposit.*", "booking.created", false),
            (
                "couple.wedding_date_changed",
                "couple.wedding_date_changed",
                true,
            ),
            ("*", "stripe.raw", true),
            ("*", "endpoint.disabled", true),
            ("*", "ping", true),
            // Malformed event types match nothing.
            ("*", "", false),
            ("*", "Booking.created", false),
            ("booking.*", "booking.", false),
            ("booking.*", "booking..x", false),
            ("booking.created", "booking.created ", false),
        ];
        for (pattern, event, expected) in cases {
            let p = EventPattern::parse(pattern).expect("valid pattern");
            assert_eq!(p.matches(event), expected, "{pattern} vs {event}");
            assert_eq!(p.is_wildcard(), pattern.ends_with('*'));
        }
    }

    #[test]
    fn subscriptions() {
        let patterns: Vec<EventPattern> = ["booking.*", "payment.completed"]
            .iter()
            .map(|p| EventPattern::parse(p).expect("valid"))
            .collect();
        let cases = [
            (&patterns[..], "booking.created", true),
            (&patterns[..], "payment.completed", true),
            (&patterns[..], "payment.failed", false),
            (&[][..], "payment.failed", true),
            (&[][..], "stripe.raw", true),
            (&[][..], "Not.An.Event", false),
        ];
        for (patterns, event, expected) in cases {
            assert_eq!(
                subscribed(patterns, event),
                expected,
                "{patterns:?} {event}"
            );
        }
    }

    #[test]
    fn pattern_lists_name_their_entries() {
        let errors =
            parse_event_patterns(&["booking.*", "Booking", "booking.*"]).expect_err("invalid");
        let fields: Vec<_> = errors.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["event_types[1]", "event_types[2]"]);
        assert_eq!(errors.0[1].message, "repeats event_types[0]");

        let ok = parse_event_patterns(&["booking.*", "stripe.raw"]).expect("valid");
        assert_eq!(ok.len(), 2);

        let many: Vec<String> = (0..=MAX_EVENT_PATTERNS)
            .map(|i| format!("e.n{i}"))
            .collect();
        let errors = parse_event_patterns(&many).expect_err("too many");
        assert_eq!(errors.0[0].field, "event_types");
    }

    #[test]
    fn patterns_are_strings_in_json() {
        let p: EventPattern = serde_json::from_str("\"booking.*\"").expect("valid");
        assert_eq!(
            serde_json::to_string(&p).expect("serialises"),
            "\"booking.*\""
        );
        assert_eq!(p.to_string(), "booking.*");
        assert_eq!("booking.*".parse::<EventPattern>(), Ok(p));
        let err = serde_json::from_str::<EventPattern>("\"booking.**\"").expect_err("invalid");
        assert!(err.to_string().contains("whole segment"), "{err}");
    }

    // ----- filters: matching ----------------------------------------------------------------

    fn payload() -> Value {
        json!({
            "type": "booking.created",
            "data": {
                "amount": 1500,
                "price": 12.5,
                "neg": -3,
                "big": 18_446_744_073_709_551_615_u64,
                "currency": "GBP",
                "deposit_paid": true,
                "notes": null,
                "couple": {"names": "Ana & Ben", "venue": "Hollins Manor"},
                "wedding_date": "2026-06-13T14:00:00Z",
                "tags": ["vip", "summer", 3],
                "items": [{"sku": "ALB-1", "qty": 2}, {"sku": "PRT-9", "qty": 1}],
                "1": "key that looks like an index"
            }
        })
    }

    fn filter(value: Value) -> Filter {
        Filter::parse(value.clone()).unwrap_or_else(|e| panic!("{value} should parse: {e}"))
    }

    #[test]
    fn filter_matching() {
        let cases = [
            // Empty filter.
            (json!({}), true),
            // Literals: typed, deep equality with numeric comparison of numbers.
            (json!({"data.currency": "GBP"}), true),
            (json!({"data.currency": "USD"}), false),
            (json!({"type": "booking.created"}), true),
            (json!({"data.amount": 1500}), true),
            (json!({"data.amount": 1500.0}), true),
            (json!({"data.amount": "1500"}), false),
            (json!({"data.price": 12.5}), true),
            (json!({"data.deposit_paid": true}), true),
            (json!({"data.deposit_paid": 1}), false),
            (json!({"data.notes": null}), true),
            (json!({"data.missing": null}), false),
            (
                json!({"data.couple": {"venue": "Hollins Manor", "names": "Ana & Ben"}}),
                true,
            ),
            (json!({"data.couple": {"venue": "Hollins Manor"}}), false),
            (json!({"data.tags": ["vip", "summer", 3.0]}), true),
            (json!({"data.tags": ["summer", "vip", 3]}), false),
            (json!({"data.couple": {}}), false),
            // Paths: array indexes, no implicit array search, no walking through scalars.
            (json!({"data.items.0.sku": "ALB-1"}), true),
            (json!({"data.items.1.qty": 1}), true),
            (json!({"data.items.2.sku": "ALB-1"}), false),
            (json!({"data.items.01.sku": "PRT-9"}), false),
            (json!({"data.items.sku": "ALB-1"}), false),
            (json!({"data.amount.cents": 1}), false),
            (json!({"data.1": "key that looks like an index"}), true),
            // $eq / $ne.
            (json!({"data.amount": {"$eq": 1500}}), true),
            (json!({"data.amount": {"$eq": 1501}}), false),
            (
                json!({"data.couple": {"$eq": {"names": "Ana & Ben", "venue": "Hollins Manor"}}}),
                true,
            ),
            (json!({"data.currency": {"$ne": "USD"}}), true),
            (json!({"data.currency": {"$ne": "GBP"}}), false),
            (json!({"data.missing": {"$ne": 1}}), true),
            // $in / $nin.
            (json!({"data.amount": {"$in": [1, 1500.0]}}), true),
            (json!({"data.currency": {"$in": ["USD", "EUR"]}}), false),
            (json!({"data.missing": {"$in": [null]}}), false),
            (json!({"data.currency": {"$in": []}}), false),
            (json!({"data.currency": {"$nin": ["USD"]}}), true),
            (json!({"data.currency": {"$nin": ["GBP", "USD"]}}), false),
            (json!({"data.missing": {"$nin": ["GBP"]}}), true),
            // Ordering on numbers.
            (json!({"data.amount": {"$gt": 1000}}), true),
            (json!({"data.amount": {"$gt": 1500}}), false),
            (json!({"data.amount": {"$gte": 1500}}), true),
            (json!({"data.amount": {"$lt": 1500}}), false),
            (json!({"data.amount": {"$lte": 1500}}), true),
            (json!({"data.amount": {"$lt": 1500.5}}), true),
            (json!({"data.amount": {"$gt": 1499.99}}), true),
            (json!({"data.price": {"$gt": 12}}), true),
            (json!({"data.price": {"$lt": 12.5}}), false),
            (json!({"data.neg": {"$lt": -2.5}}), true),
            (json!({"data.amount": {"$gte": 1000, "$lt": 2000}}), true),
            (json!({"data.amount": {"$gte": 1000, "$lt": 1500}}), false),
            // Integers beyond f64 precision compare exactly.
            (json!({"data.big": 18_446_744_073_709_551_615_u64}), true),
            (
                json!({"data.big": {"$gt": 9_007_199_254_740_993_u64}}),
                true,
            ),
            (
                json!({"data.big": {"$lt": 18_446_744_073_709_551_616.0}}),
                true,
            ),
            (
                json!({"data.big": {"$eq": 18_446_744_073_709_551_616.0}}),
                false,
            ),
            // Ordering on strings (RFC 3339 dates).
            (
                json!({"data.wedding_date": {"$gte": "2026-06-01T00:00:00Z"}}),
                true,
            ),
            (
                json!({"data.wedding_date": {"$lt": "2026-06-01T00:00:00Z"}}),
                false,
            ),
            (json!({"data.currency": {"$gt": "GBA", "$lt": "GBZ"}}), true),
            // Ordering across types, or on a missing field, never matches.
            (json!({"data.amount": {"$gt": "1000"}}), false),
            (json!({"data.currency": {"$gt": 5}}), false),
            (json!({"data.missing": {"$gt": 0}}), false),
            (json!({"data.missing": {"$lt": 0}}), false),
            // $exists.
            (json!({"data.notes": {"$exists": true}}), true),
            (json!({"data.missing": {"$exists": false}}), true),
            (json!({"data.amount": {"$exists": false}}), false),
            (json!({"data.missing": {"$exists": true}}), false),
            // $contains: substrings and array elements.
            (json!({"data.couple.venue": {"$contains": "Manor"}}), true),
            (json!({"data.couple.venue": {"$contains": "manor"}}), false),
            (json!({"data.tags": {"$contains": "vip"}}), true),
            (json!({"data.tags": {"$contains": 3.0}}), true),
            (json!({"data.tags": {"$contains": "gold"}}), false),
            (
                json!({"data.items": {"$contains": {"qty": 1, "sku": "PRT-9"}}}),
                true,
            ),
            (json!({"data.amount": {"$contains": 1}}), false),
            (json!({"data.couple.venue": {"$contains": 5}}), false),
            (json!({"data.missing": {"$contains": "x"}}), false),
            // Several keys: all must hold.
            (
                json!({"data.currency": "GBP", "data.amount": {"$gt": 1000}}),
                true,
            ),
            (
                json!({"data.currency": "GBP", "data.amount": {"$gt": 2000}}),
                false,
            ),
            // $and, $or, $not.
            (
                json!({"$and": [{"data.currency": "GBP"}, {"data.amount": {"$gt": 1000}}]}),
                true,
            ),
            (
                json!({"$and": [{"data.currency": "GBP"}, {"data.amount": {"$gt": 2000}}]}),
                false,
            ),
            (
                json!({"$or": [{"data.currency": "USD"}, {"data.deposit_paid": true}]}),
                true,
            ),
            (
                json!({"$or": [{"data.currency": "USD"}, {"data.amount": {"$lt": 0}}]}),
                false,
            ),
            (json!({"$not": {"data.currency": "USD"}}), true),
            (json!({"$not": {"data.currency": "GBP"}}), false),
            (json!({"$not": {"data.missing": 1}}), true),
            (
                json!({
                    "type": "booking.created",
                    "$or": [
                        {"data.tags": {"$contains": "vip"}},
                        {"$and": [{"data.amount": {"$gte": 5000}}, {"$not": {"data.currency": "USD"}}]}
                    ]
                }),
                true,
            ),
        ];
        let payload = payload();
        for (f, expected) in cases {
            assert_eq!(filter(f.clone()).matches(&payload), expected, "{f}");
        }
    }

    #[test]
    fn filters_on_odd_payloads_do_not_match_fields() {
        let f = filter(json!({"data.amount": {"$gt": 0}}));
        for payload in [
            json!(null),
            json!([1, 2]),
            json!("data"),
            json!(3),
            json!({"data": 5}),
        ] {
            assert!(!f.matches(&payload), "{payload}");
        }
        // A root array is walked by index like any other.
        assert!(filter(json!({"0.a": 1})).matches(&json!([{"a": 1}])));
        assert!(filter(json!({})).matches(&json!(null)));
    }

    // ----- filters: validation --------------------------------------------------------------

    fn errors_of(value: Value) -> Vec<(String, String)> {
        Filter::parse(value.clone())
            .map(|f| panic!("{value} should not parse, got {f:?}"))
            .unwrap_or_else(|e| e.0.into_iter().map(|e| (e.field, e.message)).collect())
    }

    #[test]
    fn filter_validation_names_fields() {
        let long_path = "a.".repeat(MAX_FILTER_PATH_LEN / 2) + "b";
        let long_list: Vec<u32> = (0..=100).collect();
        let mut deep_literal = json!(1);
        for _ in 0..=MAX_FILTER_LITERAL_DEPTH {
            deep_literal = json!([deep_literal]);
        }
        let cases = [
            (json!([]), "filter", "must be a JSON object"),
            (json!("data.amount"), "filter", "must be a JSON object"),
            (
                json!({"data.amount": {"$foo": 1}}),
                "filter.data.amount.$foo",
                "`$foo` is not an operator; expected one of $eq, $ne",
            ),
            (
                json!({"data.amount": {"$in": 5}}),
                "filter.data.amount.$in",
                "must be an array",
            ),
            (
                json!({"data.amount": {"$nin": "GBP"}}),
                "filter.data.amount.$nin",
                "must be an array",
            ),
            (
                json!({"data.amount": {"$in": long_list}}),
                "filter.data.amount.$in",
                "at most 100 values",
            ),
            (
                json!({"data.amount": {"$gt": true}}),
                "filter.data.amount.$gt",
                "must be a number or a string",
            ),
            (
                json!({"data.amount": {"$lte": [1]}}),
                "filter.data.amount.$lte",
                "must be a number or a string",
            ),
            (
                json!({"data.amount": {"$gte": null}}),
                "filter.data.amount.$gte",
                "must be a number or a string",
            ),
            (
                json!({"data.amount": {"$lt": {}}}),
                "filter.data.amount.$lt",
                "must be a number or a string",
            ),
            (
                json!({"data.amount": {"$exists": "yes"}}),
                "filter.data.amount.$exists",
                "must be true or false",
            ),
            (
                json!({"data.amount": {"$gt": 1, "cents": 2}}),
                "filter.data.amount",
                "mixes operators",
            ),
            (
                json!({"data.amount": {"$not": {"$gt": 1}}}),
                "filter.data.amount.$not",
                "combines whole filters",
            ),
            (json!({"$foo": 1}), "filter.$foo", "not a filter operator"),
            (json!({"$gt": 1}), "filter.$gt", "applies to a field"),
            (
                json!({"$and": {"a": 1}}),
                "filter.$and",
                "non-empty array of filters",
            ),
            (
                json!({"$or": []}),
                "filter.$or",
                "non-empty array of filters",
            ),
            (
                json!({"$and": [{}]}),
                "filter.$and[0]",
                "at least one condition",
            ),
            (json!({"$not": {}}), "filter.$not", "at least one condition"),
            (json!({"$not": 5}), "filter.$not", "must be a JSON object"),
            (
                json!({"$or": [{"a": 1}, 7]}),
                "filter.$or[1]",
                "must be a JSON object",
            ),
            (
                json!({"$or": [{"a": 1}, {"b": {"$in": 1}}]}),
                "filter.$or[1].b.$in",
                "must be an array",
            ),
            (
                json!({"data..amount": 1}),
                "filter.data..amount",
                "not a field path",
            ),
            (json!({".amount": 1}), "filter..amount", "not a field path"),
            (json!({"": 1}), "filter.", "field path must not be empty"),
            (
                json!({long_path.clone(): 1}),
                &format!("filter.{long_path}"),
                "at most 256 characters",
            ),
            (
                json!({"a": deep_literal.clone()}),
                "filter.a",
                "more than 16 levels deep",
            ),
            (
                json!({"a": {"$in": [deep_literal]}}),
                "filter.a.$in[0]",
                "more than 16 levels deep",
            ),
        ];
        for (value, field, fragment) in cases {
            let errors = errors_of(value.clone());
            assert!(
                errors
                    .iter()
                    .any(|(f, m)| f == field && m.contains(fragment)),
                "{value}: {errors:?} lacks {field}: {fragment}"
            );
        }
    }

    #[test]
    fn filter_validation_reports_everything_at_once() {
        let errors = errors_of(json!({
            "a": {"$in": 1},
            "b": {"$gt": null},
            "$or": [{"c": {"$exists": 1}}],
            "d": 1,
        }));
        let fields: Vec<_> = errors.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            ["filter.a.$in", "filter.b.$gt", "filter.$or[0].c.$exists"]
        );
    }

    fn nested_not(levels: usize) -> Value {
        (0..levels).fold(json!({"a": 1}), |inner, _| json!({"$not": inner}))
    }

    #[test]
    fn filter_depth_is_limited() {
        let ok = filter(nested_not(MAX_FILTER_DEPTH));
        assert_eq!(
            ok.matches(&json!({"a": 1})),
            MAX_FILTER_DEPTH.is_multiple_of(2)
        );

        let field = format!("filter{}", ".$not".repeat(MAX_FILTER_DEPTH + 1));
        assert_eq!(
            errors_of(nested_not(MAX_FILTER_DEPTH + 1)),
            [(
                field,
                "nests $and, $or and $not more than 8 levels deep".to_owned()
            )]
        );

        let and_chain =
            |levels: usize| (0..levels).fold(json!({"a": 1}), |inner, _| json!({"$and": [inner]}));
        filter(and_chain(MAX_FILTER_DEPTH));
        let errors = errors_of(and_chain(MAX_FILTER_DEPTH + 1));
        assert_eq!(errors.len(), 1);
        assert!(errors[0].0.ends_with(".$and"), "{errors:?}");
    }

    #[test]
    fn filter_conditions_are_limited() {
        let conditions = |n: usize| -> Value {
            Value::Object((0..n).map(|i| (format!("f{i}"), json!(i))).collect())
        };
        filter(conditions(MAX_FILTER_CONDITIONS));
        assert_eq!(
            errors_of(conditions(MAX_FILTER_CONDITIONS + 1)),
            [(
                "filter".to_owned(),
                "has 65 conditions; at most 64 are allowed".to_owned()
            )]
        );
        // Each operator counts, wherever it sits.
        let mut ops = conditions(MAX_FILTER_CONDITIONS - 1);
        ops["$or"] = json!([{"x": {"$gt": 1, "$lt": 5}}]);
        let errors = errors_of(ops);
        assert_eq!(errors[0].1, "has 65 conditions; at most 64 are allowed");
    }

    #[test]
    fn filters_round_trip_as_written() {
        let text = r#"{"z":1,"data.amount":{"$lt":5000,"$gte":100.0},"$or":[{"b":{"$in":[1,"x",null]}},{"$not":{"c.0":{"$exists":false}}}],"a":{"k":{"$x":1}},"d":{"$eq":{"$raw":true}},"e":{"$contains":"Manor"},"f":{"$nin":[]},"g":{"$ne":[1,{"h":2}]}}"#;
        let parsed: Filter = serde_json::from_str(text).expect("valid filter");
        assert_eq!(serde_json::to_string(&parsed).expect("serialises"), text);
        let again: Filter = serde_json::from_value(parsed.to_json()).expect("valid filter");
        assert_eq!(again, parsed);

        let err = serde_json::from_str::<Filter>(r#"{"a":{"$in":1}}"#).expect_err("invalid");
        assert!(
            err.to_string().contains("filter.a.$in: must be an array"),
            "{err}"
        );
    }

    // ----- headers --------------------------------------------------------------------------

    fn headers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn header_validation() {
        let long_value = "v".repeat(MAX_HEADER_VALUE_LEN + 1);
        let longest_value = "v".repeat(MAX_HEADER_VALUE_LEN);
        let long_name = "n".repeat(MAX_HEADER_NAME_LEN + 1);
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("X-Api-Key", "abc123", None),
            ("Authorization", "Bearer abc.def", None),
            ("X-Tabbed", "a\tb", None),
            ("x!#$%&'*+-.^_`|~9", "ok", None),
            ("X-Long", &longest_value, None),
            (
                "Host",
                "evil.example",
                Some("managed by the HTTP connection"),
            ),
            (
                "content-length",
                "5",
                Some("managed by the HTTP connection"),
            ),
            (
                "Transfer-Encoding",
                "chunked",
                Some("managed by the HTTP connection"),
            ),
            (
                "CONNECTION",
                "close",
                Some("managed by the HTTP connection"),
            ),
            ("Content-Type", "text/plain", Some("set by WedSync")),
            ("User-Agent", "me", Some("set by WedSync")),
            ("Webhook-Signature", "v1,x", Some("set by WedSync")),
            ("webhook-id", "msg_1", Some("set by WedSync")),
            ("SVIX-ID", "msg_1", Some("set by WedSync")),
            ("", "x", Some("header name must not be empty")),
            ("X Bad", "x", Some("is not a header name")),
            ("X-Bad:", "x", Some("is not a header name")),
            ("X-Ünicode", "x", Some("is not a header name")),
            (&long_name, "x", Some("header name must be at most 256")),
            (
                "X-Inject",
                "a\r\nSet-Cookie: x",
                Some("must not contain line breaks"),
            ),
            ("X-Inject", "a\nb", Some("must not contain line breaks")),
            ("X-Accent", "café", Some("printable ASCII")),
            ("X-Nul", "a\0b", Some("printable ASCII")),
            ("X-Space", " padded", Some("start or end with whitespace")),
            ("X-Space", "padded\t", Some("start or end with whitespace")),
            ("X-Empty", "", Some("header value must not be empty")),
            ("X-Long", &long_value, Some("at most 1024 bytes")),
        ];
        for (name, value, expected) in cases {
            let result = validate_headers(&headers(&[(name, value)]));
            match (result, expected) {
                (Ok(()), None) => {}
                (Err(errors), Some(fragment)) => {
                    assert_eq!(errors.0.len(), 1, "{name}: {errors:?}");
                    assert_eq!(errors.0[0].field, format!("headers.{name}"));
                    assert!(
                        errors.0[0].message.contains(fragment),
                        "{name}: {errors:?} lacks {fragment}"
                    );
                }
                (got, want) => panic!("{name}={value:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn headers_are_counted_and_unique_ignoring_case() {
        let twenty: BTreeMap<String, String> = (0..MAX_CUSTOM_HEADERS)
            .map(|i| (format!("X-H{i}"), "v".to_owned()))
            .collect();
        validate_headers(&twenty).expect("twenty is fine");
        let mut too_many = twenty;
        too_many.insert("X-One-More".into(), "v".into());
        let errors = validate_headers(&too_many).expect_err("too many");
        assert_eq!(errors.0[0].field, "headers");

        let errors =
            validate_headers(&headers(&[("X-Key", "a"), ("x-key", "b")])).expect_err("dupe");
        assert_eq!(errors.0.len(), 1);
        assert_eq!(errors.0[0].field, "headers.x-key");
        assert!(errors.0[0].message.contains("`X-Key`"), "{errors:?}");
    }

    #[test]
    fn custom_headers_hide_their_values() {
        let parsed =
            CustomHeaders::parse(headers(&[("Authorization", "Bearer hunter2")])).expect("valid");
        let debug = format!("{parsed:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("Authorization"), "{debug}");
        assert_eq!(parsed.len(), 1);
        assert_eq!(
            parsed.iter().collect::<Vec<_>>(),
            [("Authorization", "Bearer hunter2")]
        );
        let json = serde_json::to_string(&parsed).expect("serialises");
        assert_eq!(json, r#"{"Authorization":"Bearer hunter2"}"#);
        assert_eq!(
            serde_json::from_str::<CustomHeaders>(&json).expect("valid"),
            parsed
        );
        assert!(serde_json::from_str::<CustomHeaders>(r#"{"Host":"x"}"#).is_err());
    }

    // ----- secrets --------------------------------------------------------------------------

    #[test]
    fn generated_secrets() {
        for len in [
            EndpointSecret::MIN_LEN,
            EndpointSecret::DEFAULT_LEN,
            EndpointSecret::MAX_LEN,
        ] {
            let secret = EndpointSecret::generate(len).expect("valid length");
            assert_eq!(secret.key().len(), len);
            let text = secret.expose();
            let encoded = text.strip_prefix("whsec_").expect("prefixed");
            assert_eq!(STANDARD.decode(encoded).expect("base64"), secret.key());
            let parsed = EndpointSecret::parse(&text).expect("parses back");
            assert_eq!(parsed.key(), secret.key());
        }
        for len in [0, EndpointSecret::MIN_LEN - 1, EndpointSecret::MAX_LEN + 1] {
            assert_eq!(
                EndpointSecret::generate(len).map(|s| s.key().len()),
                Err(SecretError::Length { len })
            );
        }
        let a = EndpointSecret::generate(EndpointSecret::DEFAULT_LEN).expect("valid");
        let b = EndpointSecret::generate(EndpointSecret::DEFAULT_LEN).expect("valid");
        assert_ne!(a.key(), b.key());
    }

    #[test]
    fn injected_generators_are_deterministic() {
        let make = || {
            let mut rng = rand::rngs::StdRng::seed_from_u64(7);
            EndpointSecret::generate_with(&mut rng, 40).expect("valid")
        };
        assert_eq!(make().key(), make().key());
        assert_eq!(make().key().len(), 40);
    }

    #[test]
    fn parsed_secrets() {
        let key24 = STANDARD.encode([7u8; 24]);
        let key23 = STANDARD.encode([7u8; 23]);
        let key65 = STANDARD.encode([7u8; 65]);
        let unpadded = STANDARD.encode([9u8; 32]).trim_end_matches('=').to_owned();
        let cases = [
            (format!("whsec_{key24}"), Ok(24)),
            (format!("  whsec_{key24}\n"), Ok(24)),
            (format!("whsec_{unpadded}"), Ok(32)),
            (key24.clone(), Err(SecretError::MissingPrefix)),
            (format!("WHSEC_{key24}"), Err(SecretError::MissingPrefix)),
            ("whsec_not*base64!".to_owned(), Err(SecretError::NotBase64)),
            (
                format!("whsec_{}", key24.replace('H', "-")),
                Err(SecretError::NotBase64),
            ),
            (
                format!("whsec_{key23}"),
                Err(SecretError::Length { len: 23 }),
            ),
            (
                format!("whsec_{key65}"),
                Err(SecretError::Length { len: 65 }),
            ),
            ("whsec_".to_owned(), Err(SecretError::Length { len: 0 })),
        ];
        for (text, expected) in cases {
            assert_eq!(
                EndpointSecret::parse(&text).map(|s| s.key().len()),
                expected,
                "{text:?}"
            );
        }
        assert_eq!(
            SecretError::Length { len: 3 }.to_string(),
            "key must be 24 to 64 bytes long, not 3"
        );
        // Normalises to padded base64.
        let parsed = EndpointSecret::parse(&format!("whsec_{unpadded}")).expect("valid");
        assert!(parsed.expose().ends_with('='));
    }

    #[test]
    fn secrets_do_not_leak_through_debug() {
        let secret = EndpointSecret::generate(EndpointSecret::DEFAULT_LEN).expect("valid");
        assert_eq!(format!("{secret:?}"), "EndpointSecret(***)");
        assert_eq!(
            format!("{:?}", Some(secret.clone())),
            "Some(EndpointSecret(***))"
        );
    }

    // ----- URL, timeout, rate limit ---------------------------------------------------------

    #[test]
    fn endpoint_urls() {
        let too_long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        let cases: &[(&str, Result<&str, &str>)] = &[
            (
                "https://hooks.example.com/wedsync",
                Ok("https://hooks.example.com/wedsync"),
            ),
            (
                "http://example.com:8080/a?b=c",
                Ok("http://example.com:8080/a?b=c"),
            ),
            ("  https://Example.COM/x  ", Ok("https://example.com/x")),
            ("https://[::1]:8443/hook", Ok("https://[::1]:8443/hook")),
            ("", Err("must not be empty")),
            ("   ", Err("must not be empty")),
            (
                "example.com/hook",
                Err("is not an absolute http or https URL"),
            ),
            ("http://", Err("is not an absolute http or https URL")),
            ("ftp://example.com/", Err("must use http or https, not ftp")),
            (
                "file:///etc/passwd",
                Err("must use http or https, not file"),
            ),
            (
                "mailto:ops@example.com",
                Err("must use http or https, not mailto"),
            ),
            ("https://user:pass@example.com/", Err("custom header")),
            ("https://user@example.com/", Err("custom header")),
            ("https://:pass@example.com/", Err("custom header")),
            ("https://example.com/hook#frag", Err("#fragment")),
            ("https://example.com/hook#", Err("#fragment")),
            (&too_long, Err("at most 2048 characters")),
        ];
        for (input, expected) in cases {
            match (validate_endpoint_url(input), expected) {
                (Ok(url), Ok(normalised)) => assert_eq!(url.as_str(), *normalised),
                (Err(e), Err(fragment)) => {
                    assert_eq!(e.field, "url");
                    assert!(
                        e.message.contains(fragment),
                        "{input}: {e:?} lacks {fragment}"
                    );
                }
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn timeouts_and_rate_limits() {
        let cases = [
            (validate_timeout_ms(0), Some("timeout_ms")),
            (validate_timeout_ms(999), Some("timeout_ms")),
            (validate_timeout_ms(1_000), None),
            (validate_timeout_ms(15_000), None),
            (validate_timeout_ms(30_000), None),
            (validate_timeout_ms(30_001), Some("timeout_ms")),
            (validate_rate_limit(0), Some("rate_limit")),
            (validate_rate_limit(1), None),
            (validate_rate_limit(10_000), None),
            (validate_rate_limit(10_001), Some("rate_limit")),
            (validate_rate_limit(u32::MAX), Some("rate_limit")),
        ];
        for (result, field) in cases {
            assert_eq!(
                result.map_err(|e| e.0[0].field.clone()).err().as_deref(),
                field
            );
        }
        assert_eq!(
            validate_timeout_ms(1).expect_err("too short").0[0].message,
            "must be between 1000 and 30000 milliseconds"
        );
        assert_eq!(
            validate_rate_limit(0).expect_err("zero").0[0].message,
            "must be between 1 and 10000 requests per second"
        );
    }

    // ----- properties -----------------------------------------------------------------------

    /// Object keys that make generated JSON hit generated paths and operators now and then.
    fn json_key() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[a-c]",
            1 => Just("data".to_owned()),
            1 => Just("items".to_owned()),
            1 => "[01]",
            1 => prop::sample::select(vec![
                "$and", "$or", "$not", "$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt",
                "$lte", "$exists", "$contains", "$bogus", "a.b", "", "a..b",
            ])
            .prop_map(str::to_owned),
            1 => any::<String>(),
        ]
    }

    /// Any JSON value, including extreme numbers and non-ASCII strings.
    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-3i64..3).prop_map(Value::from),
            (-3.0f64..3.0).prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[a-c]{0,3}".prop_map(Value::from),
            any::<String>().prop_map(Value::from),
        ];
        leaf.prop_recursive(5, 48, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((json_key(), inner), 0..4)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    fn path() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "a",
            "b",
            "c",
            "a.b",
            "a.c",
            "data",
            "data.a",
            "items.0",
            "items.1.a",
            "a.0",
            "a.1.b",
            "0",
            "b.a.c",
        ])
        .prop_map(str::to_owned)
    }

    /// Literals whose objects have no `$` keys, so they stay literals.
    fn literal() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-3i64..3).prop_map(Value::from),
            (-3.0f64..3.0).prop_map(Value::from),
            "[a-c]{0,2}".prop_map(Value::from),
        ];
        leaf.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::vec(("[a-c]", inner), 0..3)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    fn bound() -> impl Strategy<Value = Value> {
        prop_oneof![
            (-3i64..3).prop_map(Value::from),
            (-3.0f64..3.0).prop_map(Value::from),
            "[a-c]{0,2}".prop_map(Value::from),
        ]
    }

    fn operator() -> impl Strategy<Value = (String, Value)> {
        let list = || prop::collection::vec(literal(), 0..4).prop_map(Value::Array);
        prop_oneof![
            literal().prop_map(|v| ("$eq".to_owned(), v)),
            literal().prop_map(|v| ("$ne".to_owned(), v)),
            list().prop_map(|v| ("$in".to_owned(), v)),
            list().prop_map(|v| ("$nin".to_owned(), v)),
            (
                prop::sample::select(vec!["$gt", "$gte", "$lt", "$lte"]),
                bound()
            )
                .prop_map(|(op, v)| (op.to_owned(), v)),
            any::<bool>().prop_map(|b| ("$exists".to_owned(), Value::Bool(b))),
            literal().prop_map(|v| ("$contains".to_owned(), v)),
        ]
    }

    fn condition() -> impl Strategy<Value = Value> {
        prop_oneof![
            literal(),
            prop::collection::vec(operator(), 1..3)
                .prop_map(|ops| Value::Object(ops.into_iter().collect())),
        ]
    }

    /// Valid filters (bar, possibly, too many conditions), nesting up to 3 logical operators.
    fn filter_json() -> impl Strategy<Value = Value> {
        let fields = || prop::collection::vec((path(), condition()), 1..3);
        fields()
            .prop_map(|entries| Value::Object(entries.into_iter().collect()))
            .prop_recursive(3, 24, 3, move |inner| {
                let logical = prop_oneof![
                    prop::collection::vec(inner.clone(), 1..3)
                        .prop_map(|fs| ("$and".to_owned(), Value::Array(fs))),
                    prop::collection::vec(inner.clone(), 1..3)
                        .prop_map(|fs| ("$or".to_owned(), Value::Array(fs))),
                    inner.prop_map(|f| ("$not".to_owned(), f)),
                ];
                prop::collection::vec(prop_oneof![(path(), condition()), logical], 1..3)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect()))
            })
    }

    fn only_too_many_conditions(errors: &ValidationErrors) -> bool {
        errors
            .0
            .iter()
            .all(|e| e.field == "filter" && e.message.contains("conditions"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn pattern_parse_never_panics(s in any::<String>()) {
            if let Ok(p) = EventPattern::parse(&s) {
                prop_assert_eq!(p.as_str(), s.as_str());
            }
        }

        #[test]
        fn parsed_patterns_are_well_formed(s in "[a-cA*._]{0,10}") {
            if let Ok(p) = EventPattern::parse(&s) {
                prop_assert_eq!(p.as_str(), s.as_str());
                if p.is_wildcard() {
                    let prefix = s.trim_end_matches('*');
                    prop_assert!(prefix.is_empty() || is_event_type(prefix.trim_end_matches('.')));
                } else {
                    prop_assert!(is_event_type(&s));
                    prop_assert!(p.matches(&s));
                }
            }
        }

        #[test]
        fn patterns_match_their_event_types(event in "[a-z0-9_]{1,5}(\\.[a-z0-9_]{1,5}){0,3}") {
            prop_assert!(EventPattern::parse(&event).expect("valid").matches(&event));
            prop_assert!(EventPattern::parse("*").expect("valid").matches(&event));
            let segments: Vec<&str> = event.split('.').collect();
            for k in 1..=segments.len() {
                let pattern = format!("{}.*", segments[..k].join("."));
                let p = EventPattern::parse(&pattern).expect("valid");
                // `*` needs at least one more segment.
                prop_assert_eq!(p.matches(&event), k < segments.len(), "{}", pattern);
            }
        }

        #[test]
        fn generated_filters_parse_round_trip_and_match(f in filter_json(), payload in arb_json()) {
            match Filter::parse(f.clone()) {
                Ok(parsed) => {
                    prop_assert_eq!(
                        serde_json::to_string(&parsed).expect("serialises"),
                        serde_json::to_string(&f).expect("serialises")
                    );
                    let reparsed = Filter::parse(parsed.to_json());
                    prop_assert_eq!(reparsed.as_ref(), Ok(&parsed));
                    let verdict = parsed.matches(&payload);
                    let negated = Filter::parse(json!({"$not": f})).expect("one level deeper is fine");
                    prop_assert_eq!(negated.matches(&payload), !verdict);
                }
                Err(errors) => prop_assert!(only_too_many_conditions(&errors), "{}: {}", f, errors),
            }
        }

        #[test]
        fn any_json_as_a_filter_never_panics(f in arb_json(), payload in arb_json()) {
            if let Ok(parsed) = Filter::parse(f.clone()) {
                prop_assert_eq!(
                    serde_json::to_string(&parsed).expect("serialises"),
                    serde_json::to_string(&f).expect("serialises")
                );
                let _ = parsed.matches(&payload);
            }
        }

        #[test]
        fn negated_operators_are_complements(
            path in path(),
            value in literal(),
            values in prop::collection::vec(literal(), 0..4),
            payload in arb_json(),
        ) {
            let check = |op: &str, operand: &Value| {
                filter(json!({path.clone(): {op: operand.clone()}})).matches(&payload)
            };
            prop_assert_eq!(check("$ne", &value), !check("$eq", &value));
            let list = Value::Array(values);
            prop_assert_eq!(check("$nin", &list), !check("$in", &list));
        }

        #[test]
        fn equality_is_reflexive_up_to_literal_depth(value in arb_json()) {
            let f = filter(json!({"x": {"$eq": value.clone()}}));
            let payload = json!({"x": value});
            prop_assert!(f.matches(&payload));
        }

        #[test]
        fn ordering_agrees_with_f64_for_small_numbers(a in -1e6f64..1e6, b in -1_000_000i64..1_000_000) {
            let payload = json!({"x": b});
            let gt = filter(json!({"x": {"$gt": a}})).matches(&payload);
            let eq = filter(json!({"x": a})).matches(&payload);
            let expected = (b as f64).partial_cmp(&a);
            prop_assert_eq!(gt, expected == Some(Ordering::Greater));
            prop_assert_eq!(eq, expected == Some(Ordering::Equal));
        }
    }
}
