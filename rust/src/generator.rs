//! Deterministic generator of realistic access logs in every supported format. (stub)
