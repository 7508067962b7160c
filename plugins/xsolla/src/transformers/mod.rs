//! Pure mappings between normalized types and Xsolla's wire format (seed document `001`,
//! Pay Station API v2, and `shared/providers.md` section 2). Nothing here builds a flow or
//! reads configuration: every function takes the data it maps and returns the mapped data.

pub mod errors;
pub mod json;
pub mod records;
pub mod status;
pub mod webhook;
pub mod wire;
