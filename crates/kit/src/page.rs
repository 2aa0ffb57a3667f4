//! Pagination.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::ApiError;

/// `?page=&per_page=` as clients send them: 1-based pages of at most 100 items.
#[derive(Debug, Clone, Copy, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// The page, from 1 (the default) to 1000000.
    #[serde(default = "first")]
    #[param(minimum = 1, maximum = 1_000_000, default = 1)]
    pub page: u32,
    /// Items per page, from 1 to 100; 20 by default.
    #[serde(default = "twenty")]
    #[param(minimum = 1, maximum = 100, default = 20)]
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
#[derive(Debug, Serialize, ToSchema)]
pub struct Paged<T> {
    pub items: Vec<T>,
    /// The page answered, from 1.
    pub page: u32,
    pub per_page: u32,
    /// How many items there are in all the pages.
    pub total: i64,
}
