-- The review stage (PRODUCT.md §5). Agents whose rejected work must not get the task's next
-- attempt (a JSON array of agent ids); NULL for every task without such a rejection, so a
-- claim pays one NULL test per candidate.
ALTER TABLE tasks ADD COLUMN excluded_agents TEXT;
