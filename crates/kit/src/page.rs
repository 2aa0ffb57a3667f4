//! Pagination.

use serde::{Deserialize, Serialize};

use crate::ApiError;

/// `?page=&per_page=` as clients send them: 1-based pages of at most 100 items.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    #[serde(default = "first")]
    pub page: u32,
    #[serde(default = "twenty")]
    pub per_page: u32,
}

fn first() -> u32 {
    1
}

fn twenty() -> u32 {
    20
}

impl Default for Page {
    fn default() -> Self {
        Self {
            page: 1,
            per_page: 20,
        }
    }
}

impl Page {
    pub const MAX_PER_PAGE: u32 = 100;

    pub fn validate(self) -> Result<Self, ApiError> {
        if self.page == 0 || self.page > 1_000_000 {
            return Err(ApiError::invalid("page", "must be between 1 and 1000000"));
        }
        if self.per_page == 0 || self.per_page > Self::MAX_PER_PAGE {
            return Err(ApiError::invalid("per_page", "must be between 1 and 100"));
        }
        Ok(self)
    }

    pub fn limit(self) -> i64 {
        i64::from(self.per_page)
    }

    pub fn offset(self) -> i64 {
        i64::from(self.page - 1) * i64::from(self.per_page)
    }
}

/// One page of a listing.
#[derive(Debug, Serialize)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub page: u32,
    pub per_page: u32,
    pub total: i64,
}
