-- Keys every service signs and checks payers' links with (the payer's page): the first
-- service to need one makes it, the others read it, so all of them agree without a setting.
CREATE TABLE link_keys (
    name TEXT PRIMARY KEY,
    key  TEXT NOT NULL
);
