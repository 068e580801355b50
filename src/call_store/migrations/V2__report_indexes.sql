-- The call store, version 2: indexes for the questions engineers ask most (calls to a DID,
-- from a caller, answered by a user, by outcome and by ring group, each over time) and for
-- finding a call by any of its legs' Unique-ID.
CREATE INDEX calls_ddi_start ON calls (ddi_num, start_time);
CREATE INDEX calls_cli_start ON calls (cli_num, start_time);
CREATE INDEX calls_answered_by ON calls (ans_usr_num, start_time) WHERE ans_usr_num IS NOT NULL;
CREATE INDEX calls_outcome_start ON calls (outcome, start_time);
CREATE INDEX calls_group_start ON calls (f_rng_group_name, start_time) WHERE f_rng_group_name IS NOT NULL;
CREATE INDEX calls_legs ON calls USING gin (legs jsonb_path_ops);
