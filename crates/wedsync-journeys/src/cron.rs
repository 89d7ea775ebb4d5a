//! A small, dependency-free check of five-field cron expressions.
//!
//! Accepted: `minute hour day-of-month month day-of-week`, each field a comma-separated list of
//! `*`, `N`, `N-M`, with an optional `/STEP` after any of them. Months may be named `JAN`–`DEC`
//! and weekdays `SUN`–`SAT` (any case); weekday `7` is Sunday like `0`. Not accepted: the
//! `@daily` style macros, a seconds or year field, and the Quartz extensions `?`, `L`, `W`, `#`.

/// One field of a cron expression: its name, its value range and the names it accepts.
struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    /// Names for `min`, `min + 1`, ...
    names: &'static [&'static str],
}

const FIELDS: [FieldSpec; 5] = [
    FieldSpec {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
    },
    FieldSpec {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
    },
    FieldSpec {
        name: "day of month",
        min: 1,
        max: 31,
        names: &[],
    },
    FieldSpec {
        name: "month",
        min: 1,
        max: 12,
        names: &[
            "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
        ],
    },
    FieldSpec {
        name: "day of week",
        min: 0,
        max: 7,
        names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
    },
];

/// Checks a five-field cron expression, returning what is wrong with it.
pub fn check_cron(expression: &str) -> Result<(), String> {
    let parts: Vec<&str> = expression.split_whitespace().collect();
    if parts.len() != FIELDS.len() {
        return Err(format!(
            "needs 5 fields (minute hour day-of-month month day-of-week), found {}",
            parts.len()
        ));
    }
    for (part, spec) in parts.iter().zip(FIELDS.iter()) {
        check_field(part, spec).map_err(|e| format!("{}: {e}", spec.name))?;
    }
    Ok(())
}

fn check_field(field: &str, spec: &FieldSpec) -> Result<(), String> {
    for item in field.split(',') {
        if item.is_empty() {
            return Err(format!("empty list item in `{field}`"));
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(step)),
            None => (item, None),
        };
        if let Some(step) = step {
            let step = number(step).ok_or_else(|| format!("step `{step}` is not a number"))?;
            if step == 0 || step > spec.max {
                return Err(format!("step {step} must be between 1 and {}", spec.max));
            }
        }
        if range == "*" {
            continue;
        }
        match range.split_once('-') {
            Some((low, high)) => {
                let low = value(low, spec)?;
                let high = value(high, spec)?;
                if low > high {
                    return Err(format!("range `{range}` runs backwards"));
                }
            }
            None => {
                value(range, spec)?;
            }
        }
    }
    Ok(())
}

fn number(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 2 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn value(text: &str, spec: &FieldSpec) -> Result<u32, String> {
    if let Some(n) = number(text) {
        return if (spec.min..=spec.max).contains(&n) {
            Ok(n)
        } else {
            Err(format!("{n} is out of range {}-{}", spec.min, spec.max))
        };
    }
    spec.names
        .iter()
        .zip(spec.min..)
        .find(|(name, _)| name.eq_ignore_ascii_case(text))
        .map(|(_, n)| n)
        .ok_or_else(|| format!("`{text}` is not a valid value"))
}

#[cfg(test)]
mod tests {
    use super::check_cron;

    #[test]
    fn accepts_common_expressions() {
        for expr in [
            "0 9 * * MON",
            "*/15 * * * *",
            "0 9-17/2 1,15 JAN-jun mon-fri",
            "30 8 * * 0",
            "0 0 1 1 7",
            "5/10 * * * *",
        ] {
            assert_eq!(check_cron(expr), Ok(()), "{expr}");
        }
    }

    #[test]
    fn rejects_bad_expressions() {
        let cases = [
            ("0 9 * *", "needs 5 fields"),
            ("0 9 * * * *", "found 6"),
            ("60 9 * * *", "minute: 60 is out of range 0-59"),
            ("0 24 * * *", "hour: 24 is out of range"),
            ("0 9 0 * *", "day of month: 0 is out of range 1-31"),
            ("0 9 * 13 *", "month: 13"),
            ("0 9 * * FUN", "day of week: `FUN` is not a valid value"),
            ("0 9 * * MON-", "day of week: `` is not a valid value"),
            ("*/0 * * * *", "step 0"),
            ("0 17-9 * * *", "runs backwards"),
            ("0 9 * * 1,,2", "empty list item"),
            ("@daily", "needs 5 fields"),
            ("0 9 ? * MON", "`?` is not a valid value"),
            ("0 -9 * * *", "`` is not a valid value"),
        ];
        for (expr, fragment) in cases {
            let err = check_cron(expr).err().unwrap_or_default();
            assert!(err.contains(fragment), "{expr}: {err}");
        }
    }
}
