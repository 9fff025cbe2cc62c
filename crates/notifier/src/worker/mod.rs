//! The senders that work through the notifier's queues after the follower commits.
pub mod notices;
pub mod webhooks;
