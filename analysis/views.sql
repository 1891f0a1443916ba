-- hllm-sim analysis views: every metric is defined ONCE here, over the simulator's event
-- tables (runs, arms, assignments, requests, exposures, feedback), and aggregated to the
-- randomisation unit (the user) before any test. Query them directly with `sim query`, e.g.
--   sim query "SELECT * FROM v_arm_summary WHERE run_id = 'abc'"
-- Positions are 0-based; a click at position p contributes 1/log2(p + 2) to a slate's DCG.

-- One row per request: slate size, clicks, consumes, slate NDCG (binary gains = clicks).
CREATE OR REPLACE VIEW v_request_metrics AS
WITH fb AS (
  SELECT run_id, request_id,
         count(*) FILTER (WHERE event = 'click')                       AS clicks,
         count(*) FILTER (WHERE event = 'consume')                     AS consumes,
         coalesce(sum(value) FILTER (WHERE event = 'consume'), 0)      AS consumption,
         coalesce(sum(1.0 / log2(position + 2)) FILTER (WHERE event = 'click'), 0) AS dcg
  FROM feedback GROUP BY ALL),
ex AS (SELECT run_id, request_id, count(*) AS exposures FROM exposures GROUP BY ALL),
idcg AS (SELECT i + 1 AS n, sum(1.0 / log2(i + 2)) OVER (ORDER BY i) AS idcg FROM range(4096) t(i))
SELECT r.run_id, r.request_id, r.user_id, r.arm, r.ts, r.session_id, r.latency_ms,
       coalesce(ex.exposures, 0)   AS exposures,
       coalesce(fb.clicks, 0)      AS clicks,
       coalesce(fb.consumes, 0)    AS consumes,
       coalesce(fb.consumption, 0) AS consumption,
       CASE WHEN coalesce(fb.clicks, 0) > 0 THEN 1 ELSE 0 END AS hit,
       -- ideal DCG for n clicks = sum_{i<n} 1/log2(i+2) (lookup table idcg)
       CASE WHEN coalesce(fb.clicks, 0) = 0 THEN 0.0 ELSE fb.dcg / idcg.idcg END AS ndcg
FROM requests r
LEFT JOIN ex USING (run_id, request_id)
LEFT JOIN fb USING (run_id, request_id)
LEFT JOIN idcg ON idcg.n = fb.clicks;

-- One row per (run, arm, user) assigned by simulated time `cutoff`: sums (numerators/denominators)
-- of the user's requests up to then. v_user_metrics is the whole run; the sequential monitor
-- (analysis/sequential.py) looks at a run through this at each look.
-- Ratio metrics: CTR = clicks/exposures, hit rate = hits/requests, NDCG = ndcg_sum/requests,
-- session length = requests/sessions, latency = latency_sum/requests (tested with the delta method).
CREATE OR REPLACE MACRO user_metrics_until(cutoff) AS TABLE
WITH u AS (
  SELECT run_id, user_id, arm,
         count(*)                    AS requests,
         count(DISTINCT session_id)  AS sessions,
         count(DISTINCT floor(ts / 86400)) AS active_days,
         sum(exposures)              AS exposures,
         sum(clicks)                 AS clicks,
         sum(consumes)               AS consumes,
         sum(consumption)            AS consumption,
         sum(hit)                    AS hits,
         sum(ndcg)                   AS ndcg_sum,
         sum(latency_ms)             AS latency_sum,
         min(ts)                     AS first_request_ts
  FROM v_request_metrics WHERE ts <= cutoff GROUP BY ALL)
SELECT a.run_id, a.arm, a.user_id, a.first_ts,
       coalesce(u.requests, 0)    AS requests,
       coalesce(u.sessions, 0)    AS sessions,
       coalesce(u.exposures, 0)   AS exposures,
       coalesce(u.clicks, 0)      AS clicks,
       coalesce(u.consumes, 0)    AS consumes,
       coalesce(u.consumption, 0) AS consumption,
       coalesce(u.hits, 0)        AS hits,
       coalesce(u.ndcg_sum, 0)    AS ndcg_sum,
       coalesce(u.latency_sum, 0) AS latency_sum,
       CASE WHEN coalesce(u.clicks, 0) > 0 THEN 1 ELSE 0 END AS any_click,
       -- retention: came back for a second session; distinct (UTC) days with a request
       CASE WHEN coalesce(u.sessions, 0) >= 2 THEN 1 ELSE 0 END AS returned,
       coalesce(u.active_days, 0) AS active_days
FROM assignments a
LEFT JOIN u ON u.run_id = a.run_id AND u.user_id = a.user_id
WHERE a.first_ts IS NULL OR a.first_ts <= cutoff;

-- One row per (run, arm, user) that was assigned: the sums over the whole run.
CREATE OR REPLACE VIEW v_user_metrics AS SELECT * FROM user_metrics_until('infinity'::DOUBLE);

-- Per (run, arm): descriptive summary (tests use v_user_metrics, not this).
CREATE OR REPLACE VIEW v_arm_summary AS
WITH um AS (
  SELECT run_id, arm, count(*) AS users, sum(requests) AS requests, sum(sessions) AS sessions,
         sum(exposures) AS exposures, sum(clicks) AS clicks, sum(consumes) AS consumes,
         sum(consumption) AS consumption, sum(hits) AS hits, sum(ndcg_sum) AS ndcg_sum
  FROM v_user_metrics GROUP BY ALL),
lat AS (
  SELECT run_id, arm, avg(latency_ms) AS latency_mean_ms, quantile_cont(latency_ms, 0.5) AS latency_p50_ms,
         quantile_cont(latency_ms, 0.99) AS latency_p99_ms,
         -- work outside the request path (an HLLM table's refresh), not in latency; NULL: not recorded
         avg(nearline_ms) AS nearline_mean_ms
  FROM requests GROUP BY ALL),
cov AS (SELECT run_id, arm, count(DISTINCT item_id) AS distinct_items FROM exposures GROUP BY ALL)
SELECT um.run_id, um.arm, ar.role, ar.weight, um.users, um.requests, um.exposures, um.clicks,
       um.consumes,
       um.clicks / nullif(um.exposures, 0)      AS ctr,
       um.hits / nullif(um.requests, 0)         AS hit_rate,
       um.ndcg_sum / nullif(um.requests, 0)     AS ndcg,
       um.consumption / nullif(um.users, 0)     AS consumption_per_user,
       um.requests / nullif(um.sessions, 0)     AS session_length,
       lat.latency_mean_ms, lat.latency_p50_ms, lat.latency_p99_ms, lat.nearline_mean_ms,
       coalesce(cov.distinct_items, 0)          AS distinct_items
FROM um
LEFT JOIN arms ar USING (run_id, arm)
LEFT JOIN lat USING (run_id, arm)
LEFT JOIN cov USING (run_id, arm);

-- Per (run, arm, channel): the exposed / clicked / consumed items each retrieval channel found.
-- An item found by several channels (exposures.found_by) counts for each of them, so an arm's
-- channels can add up to more than its total; the shares are of the arm's exposures / clicks.
-- `only_exposures`: found by this channel alone; `credited_exposures`: credited to it by the
-- merge's de-dup (exposures.channel, the first in priority). Runs stored before found_by credit
-- the first channel only. Feedback is first reduced to one row per shown position, so an
-- exposure counts once however many events (click, consume) it received.
CREATE OR REPLACE VIEW v_channel_contribution AS
WITH f AS (
  SELECT run_id, request_id, position,
         count(*) FILTER (WHERE event = 'click')   AS clicks,
         count(*) FILTER (WHERE event = 'consume') AS consumes
  FROM feedback GROUP BY ALL),
x AS (
  SELECT e.run_id, e.arm, coalesce(e.channel, '?') AS credited,
         string_split(coalesce(nullif(e.found_by, ''), e.channel, '?'), ',') AS finders,
         coalesce(f.clicks, 0) AS clicks, coalesce(f.consumes, 0) AS consumes
  FROM exposures e
  LEFT JOIN f ON f.run_id = e.run_id AND f.request_id = e.request_id AND f.position = e.position),
tot AS (SELECT run_id, arm, count(*) AS n_exposures, sum(clicks) AS n_clicks FROM x GROUP BY ALL),
c AS (SELECT run_id, arm, unnest(finders) AS channel, credited, len(finders) AS n_finders, clicks, consumes
      FROM x)
SELECT c.run_id, c.arm, c.channel,
       count(*)                                          AS exposures,
       count(*) / any_value(tot.n_exposures)             AS exposure_share,
       sum(clicks)                                       AS clicks,
       sum(clicks) / nullif(any_value(tot.n_clicks), 0)  AS click_share,
       sum(consumes)                                     AS consumes,
       count(*) FILTER (WHERE credited = c.channel)      AS credited_exposures,
       count(*) FILTER (WHERE n_finders = 1)             AS only_exposures
FROM c JOIN tot ON tot.run_id = c.run_id AND tot.arm = c.arm
GROUP BY ALL;

-- Per (run, arm, time bucket): cumulative metrics over simulated time. The run is cut into
-- ~50 buckets (at least 1 s each); `hour` = end of the bucket in hours since runs.sim_start.
CREATE OR REPLACE VIEW v_cumulative AS
WITH b AS (SELECT run_id, sim_start,
                  greatest((coalesce(sim_end, sim_start) - sim_start) / 50.0, 1.0) AS bucket_s FROM runs),
h AS (
  SELECT m.run_id, m.arm, (floor((m.ts - b.sim_start) / b.bucket_s) + 1) * b.bucket_s / 3600.0 AS hour,
         sum(m.exposures) AS exposures, sum(m.clicks) AS clicks, sum(m.consumption) AS consumption,
         count(*) AS requests
  FROM v_request_metrics m JOIN b USING (run_id) GROUP BY ALL)
SELECT run_id, arm, hour,
       sum(exposures) OVER w AS cum_exposures, sum(clicks) OVER w AS cum_clicks,
       sum(consumption) OVER w AS cum_consumption, sum(requests) OVER w AS cum_requests,
       sum(clicks) OVER w / nullif(sum(exposures) OVER w, 0) AS cum_ctr
FROM h
WINDOW w AS (PARTITION BY run_id, arm ORDER BY hour ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW);
