//! Which (target, version) served a request. (stub: being implemented by the lead)
