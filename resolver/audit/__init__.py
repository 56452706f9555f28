"""The audit trail: hash-chained records (log), reading and checking them (trail), Flask hooks (hooks)."""
