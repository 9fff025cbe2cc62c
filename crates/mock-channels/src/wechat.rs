//! Filled in by the WeChat fake.
