//! Cache lifetime policy, kept pure: `plan` decides which tasks to evict from values (task views,
//! disk usage, the clock, the policy); `daemon::cache` is the thin loop that executes the plan.

pub mod plan;
