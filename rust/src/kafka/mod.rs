//! Kafka fetch path: Fetch requests to the partition leaders over blocking TCP ([`client`]) and
//! record batch v2 decoding into line buffers ([`batch`]), so that records never become Python
//! objects. Group membership, assignment and commits stay with the Python consumer.

pub mod batch;
pub mod client;
#[cfg(feature = "python")]
pub mod py;
