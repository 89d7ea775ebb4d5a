//! The journey document of WedSync: a per-couple visual automation as edited in the React Flow
//! canvas, its typed node configurations, and its validation on save and on publish.
//!
//! Pure: no IO. [`JourneyDocument::parse`] turns React Flow's `toObject()` JSON into typed,
//! durable fields (dropping transient UI fields); [`validate`] checks the journey's meaning, in
//! [`Mode::Draft`] (on save) or [`Mode::Publish`]; [`date_relative_instant`] computes the
//! couple-local instants of date-relative triggers and waits; [`templates`] are ready-made
//! journeys.
//!
//! [`engine`] runs instances' steps through the durable queue (a first slice of the engine:
//! see its module docs for the nodes it runs).

pub mod crm;
mod cron;
mod document;
pub mod engine;
mod model;
pub mod schedule;
mod simulate;
mod templates;
mod validation;

pub use cron::{check_cron, next_tick, parse_cron};
pub use document::{
    Edge, JourneyDocument, MAX_EDGE_LABEL_LEN, MAX_EDGES, MAX_HANDLE_LEN, MAX_ID_LEN, MAX_NODES,
    Node, check_id,
};
pub use model::*;
pub use simulate::{SimEvent, SimulationInput, Timeline, TimelineEntry, render_timeline, simulate};
pub use templates::templates;
pub use validation::*;
pub use wedsync_core::localtime::date_relative_instant;
pub use wedsync_core::validate::{FieldError, ValidationErrors};

#[cfg(test)]
mod tests;
