//! The headers every bus puts on a parked message, so that operators see the same fields whichever
//! bus parked it.

/// Why a message was parked.
pub const DEATH_REASON: &str = "x-death-reason";
/// When it was parked (RFC 3339).
pub const FAILED_AT: &str = "x-failed-at";
/// The routing key it was first published with: retries and parking re-route a message, and the
/// handler must still see where it came from.
pub const ORIGINAL_ROUTING_KEY: &str = "x-original-routing-key";
