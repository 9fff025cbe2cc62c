-- When the payer was warned that the contract's validity ends soon (`ContractExpiring`; 0 for
-- not yet). Contracts signed before warnings existed start unwarned, so those still within
-- the warning period are warned by the next sweep.
ALTER TABLE contracts_contracts ADD COLUMN expiry_warned_at_ms BIGINT NOT NULL DEFAULT 0;
-- The clean-up's fourth sweep: contracts not ended and not yet warned, by their end of
-- validity. The sweep's WHERE repeats this predicate word for word, or the planner cannot use
-- the index.
CREATE INDEX contracts_contracts_unwarned ON contracts_contracts (expires_at_ms) WHERE state IN ('active', 'suspended') AND expiry_warned_at_ms = 0 AND expires_at_ms > 0;
