-- The W3C trace context (`traceparent`, `tracestate`) of the request that
-- accepted each message, so that work done later for the message joins that
-- request's trace: a send re-enqueued by the reconciler or redriven by an
-- operator, and every webhook event Sent reports for it. NULL when the
-- gateway was not exporting traces. Adding a nullable column without a
-- default rewrites nothing.
ALTER TABLE messages ADD COLUMN trace_context jsonb;
