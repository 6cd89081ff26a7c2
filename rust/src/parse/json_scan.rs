//! A fast, allocation-free scanner over one flat JSON object (the shape of every JSON
//! access-log line). (stub: being implemented)
