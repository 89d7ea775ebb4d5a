//! Ready-made journeys a vendor can start from. Each passes [`crate::validate`] in
//! [`crate::Mode::Publish`].

use serde_json::{Value, json};

/// A node at column `col`, row `row` of the starting layout.
fn node(id: &str, node_type: &str, col: i32, row: i32, data: Value) -> Value {
    json!({
        "id": id,
        "type": node_type,
        "position": {"x": f64::from(col) * 280.0, "y": f64::from(row) * 140.0},
        "data": data,
    })
}

/// A plain edge, or one leaving the output `handle` of a branching node.
fn edge(source: &str, target: &str, handle: Option<&str>) -> Value {
    let mut e = json!({"id": format!("{source}--{target}"), "source": source, "target": target});
    if let (Some(handle), Some(obj)) = (handle, e.as_object_mut()) {
        obj.insert("sourceHandle".into(), handle.into());
        obj.insert("label".into(), handle.into());
    }
    e
}

fn document(nodes: Vec<Value>, edges: Vec<Value>) -> Value {
    json!({"nodes": nodes, "edges": edges, "viewport": {"x": 0.0, "y": 0.0, "zoom": 1.0}})
}

/// The starting journeys as `(key, title, React Flow document)`.
pub fn templates() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        (
            "enquiry_follow_up",
            "Enquiry follow-up",
            enquiry_follow_up(),
        ),
        (
            "booking_onboarding",
            "Booking onboarding",
            booking_onboarding(),
        ),
        (
            "final_details_countdown",
            "Final details countdown",
            final_details_countdown(),
        ),
        (
            "post_wedding_review",
            "Post-wedding review request",
            post_wedding_review(),
        ),
    ]
}

/// Thank the couple at once; if they have not booked after three days, remind them once.
fn enquiry_follow_up() -> Value {
    document(
        vec![
            node(
                "trigger",
                "trigger",
                0,
                0,
                json!({"trigger": {"kind": "event", "event_type": "client.created"}}),
            ),
            node(
                "thanks",
                "email",
                0,
                1,
                json!({
                    "to": "both_partners",
                    "subject": "Thank you for your enquiry, {{ recipient.first_name }}",
                    "text": "Hi {{ recipient.first_name }},\n\nThank you for getting in touch \
                             about your wedding{% if couple.wedding_date_long %} on {{ couple.wedding_date_long }}{% endif %}. \
                             We will be in touch shortly with availability and prices.",
                }),
            ),
            node(
                "await-booking",
                "wait",
                0,
                2,
                json!({
                    "mode": "until_event",
                    "event_type": "booking.created",
                    "timeout_seconds": 3 * 86_400,
                }),
            ),
            node("booked", "end", -1, 3, json!({})),
            node(
                "reminder",
                "email",
                1,
                3,
                json!({"to": "both_partners", "template": "enquiry_reminder"}),
            ),
            node("done", "end", 1, 4, json!({})),
        ],
        vec![
            edge("trigger", "thanks", None),
            edge("thanks", "await-booking", None),
            edge("await-booking", "booked", Some("event")),
            edge("await-booking", "reminder", Some("timeout")),
            edge("reminder", "done", None),
        ],
    )
}

/// Welcome the couple, send the contract, request the deposit and chase it if it is late.
fn booking_onboarding() -> Value {
    document(
        vec![
            node(
                "trigger",
                "trigger",
                0,
                0,
                json!({"trigger": {"kind": "event", "event_type": "booking.created"}}),
            ),
            node(
                "welcome",
                "email",
                0,
                1,
                json!({"to": "both_partners", "template": "booking_welcome"}),
            ),
            node(
                "send-contract",
                "task",
                0,
                2,
                json!({"title": "Send contract", "due_offset_days": 2}),
            ),
            node(
                "deposit",
                "payment",
                0,
                3,
                json!({
                    "amount_minor": 50_000,
                    "currency": "GBP",
                    "description": "Booking deposit",
                    "timeout_days": 14,
                }),
            ),
            node(
                "deposit-thanks",
                "email",
                -1,
                4,
                json!({
                    "to": "both_partners",
                    "subject": "Deposit received",
                    "text": "Thank you, {{ recipient.first_name }}: your date is secured.",
                }),
            ),
            node("onboarded", "end", -1, 5, json!({})),
            node(
                "chase-deposit",
                "vendor_action",
                1,
                4,
                json!({"title": "Call the couple about the unpaid deposit"}),
            ),
            node("chased", "end", 1, 5, json!({})),
        ],
        vec![
            edge("trigger", "welcome", None),
            edge("welcome", "send-contract", None),
            edge("send-contract", "deposit", None),
            edge("deposit", "deposit-thanks", Some("paid")),
            edge("deposit-thanks", "onboarded", None),
            edge("deposit", "chase-deposit", Some("timeout")),
            edge("chase-deposit", "chased", None),
        ],
    )
}

/// Thirty days out, ask both partners for the day's timeline; remind everyone a week out.
fn final_details_countdown() -> Value {
    document(
        vec![
            node(
                "trigger",
                "trigger",
                0,
                0,
                json!({"trigger": {"kind": "event", "event_type": "booking.created"}}),
            ),
            node(
                "thirty-days-out",
                "wait",
                0,
                1,
                json!({
                    "mode": "until_date",
                    "date": "wedding_date",
                    "offset_days": -30,
                    "at": "09:00",
                    "if_passed": "run_now",
                }),
            ),
            node(
                "timeline-form",
                "client_action",
                0,
                2,
                json!({
                    "title": "Complete your wedding-day timeline",
                    "form_id": "timeline",
                    "both_partners": true,
                }),
            ),
            node(
                "timeline-ready",
                "notification",
                0,
                3,
                json!({
                    "channel": "in_app",
                    "text": "{{ couple.names }} have completed their wedding-day timeline.",
                }),
            ),
            node(
                "one-week-out",
                "wait",
                0,
                4,
                json!({
                    "mode": "until_date",
                    "date": "wedding_date",
                    "offset_days": -7,
                    "at": "09:00",
                    "if_passed": "skip",
                }),
            ),
            node(
                "reminder",
                "email",
                0,
                5,
                json!({"to": "both_partners", "template": "one_week_to_go"}),
            ),
            node("done", "end", 0, 6, json!({})),
        ],
        vec![
            edge("trigger", "thirty-days-out", None),
            edge("thirty-days-out", "timeline-form", None),
            edge("timeline-form", "timeline-ready", None),
            edge("timeline-ready", "one-week-out", None),
            edge("one-week-out", "reminder", None),
            edge("reminder", "done", None),
        ],
    )
}

/// Two weeks after the wedding, ask for a review (skipped if that moment has already passed).
fn post_wedding_review() -> Value {
    document(
        vec![
            node(
                "trigger",
                "trigger",
                0,
                0,
                json!({"trigger": {"kind": "event", "event_type": "booking.created"}}),
            ),
            node(
                "two-weeks-after",
                "wait",
                0,
                1,
                json!({
                    "mode": "until_date",
                    "date": "wedding_date",
                    "offset_days": 14,
                    "at": "10:00",
                    "if_passed": "skip",
                }),
            ),
            node(
                "review-request",
                "email",
                0,
                2,
                json!({
                    "to": "both_partners",
                    "subject": "How was your day, {{ recipient.first_name }}?",
                    "text": "We hope you loved your wedding. Would you leave us a review?{% if vendor.review_url %} {{ vendor.review_url }}{% endif %}",
                }),
            ),
            node("done", "end", 0, 3, json!({})),
        ],
        vec![
            edge("trigger", "two-weeks-after", None),
            edge("two-weeks-after", "review-request", None),
            edge("review-request", "done", None),
        ],
    )
}
