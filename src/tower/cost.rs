//! [`RequestCost`]: what one request costs the limiter.

use crate::quota::Cost;

/// What a request costs: one request by default ([`OneRequest`]), or
/// anything a function of the request says (tokens estimated from the body,
/// a batch's number of calls).
///
/// Implemented for every `Fn(&Req) -> Cost`.
///
/// # Examples
///
/// ```
/// use paceline::Cost;
/// use paceline::tower::{OneRequest, RequestCost};
///
/// let by_length = |prompt: &String| Cost::tokens(prompt.len() as u64 / 4);
/// assert_eq!(by_length.cost(&"a prompt of 32 bytes, more or less".to_owned()).tokens, 8);
/// assert_eq!(OneRequest.cost(&"anything"), Cost::requests(1));
/// ```
pub trait RequestCost<Req> {
    /// The cost of `request`.
    fn cost(&self, request: &Req) -> Cost;
}

impl<Req, F> RequestCost<Req> for F
where
    F: Fn(&Req) -> Cost,
{
    fn cost(&self, request: &Req) -> Cost {
        self(request)
    }
}

/// Every request costs one request: the default cost.
///
/// # Examples
///
/// ```
/// use paceline::Cost;
/// use paceline::tower::{OneRequest, RequestCost};
///
/// assert_eq!(OneRequest.cost(&()), Cost::requests(1));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OneRequest;

impl<Req> RequestCost<Req> for OneRequest {
    fn cost(&self, _: &Req) -> Cost {
        Cost::requests(1)
    }
}
