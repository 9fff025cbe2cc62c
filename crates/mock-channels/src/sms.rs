//! Filled in by the SMS fake.
