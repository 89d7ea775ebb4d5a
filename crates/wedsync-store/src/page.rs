//! Cursor paging shared by every list: ids are UUIDv7 text, so "after this id" is a stable,
//! index-friendly cursor that does not skip or repeat rows when new ones arrive.

use serde::Serialize;

/// The largest page a caller may ask for.
pub const MAX_LIMIT: u64 = 100;
/// The page size when none is asked for.
pub const DEFAULT_LIMIT: u64 = 50;

/// One page of results.
#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    /// The items, oldest first.
    pub data: Vec<T>,
    /// Pass as `after` to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// What page to fetch.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    /// How many items, 1 to [`MAX_LIMIT`].
    pub limit: Option<u64>,
    /// Return items whose id sorts after this one.
    pub after: Option<String>,
}

impl PageRequest {
    pub(crate) fn limit(&self) -> u64 {
        self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
    }
}

/// Builds a page from `limit + 1` fetched rows.
pub(crate) fn paginate<T, F: Fn(&T) -> String>(mut rows: Vec<T>, limit: u64, id_of: F) -> Page<T> {
    let more = rows.len() as u64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = if more { rows.last().map(id_of) } else { None };
    Page {
        data: rows,
        next_cursor,
    }
}
