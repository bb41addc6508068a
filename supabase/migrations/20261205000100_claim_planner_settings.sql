-- The claim's planner settings, as tests/claim_plan.test.ts shows they are
-- needed. That test explains the real app.claim_channel_messages at 100,000
-- messages with statistics taken before a bulk load: after a history of many
-- small campaigns, the generic plan took the candidates from
-- messages_pending_idx and sorted every queued message on every claim, instead
-- of reading messages_claim_idx in order and stopping after `take` rows.
-- enable_sort = off leaves the ordered scan as the one plan without a disable
-- penalty (the statement's other sorts, over at most `take` rows, have no
-- alternative and stay); jit = off because that penalty would otherwise push
-- the statement's estimated cost past jit_above_cost and compile it on every
-- call. enable_bitmapscan = off stays (the spacing probe). The function body is
-- unchanged.

alter function app.claim_channel_messages(uuid, integer, integer, text, timestamptz, boolean)
  set enable_sort = off;
alter function app.claim_channel_messages(uuid, integer, integer, text, timestamptz, boolean)
  set jit = off;
