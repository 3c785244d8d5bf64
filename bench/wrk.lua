-- The bench's wrk scenarios: transfer, hot, batch, read, statement, login, health (deep is open loop: bench/openloop.py).
-- wrk ... -s bench/wrk.lua URL -- SCENARIO USERS_FILE RUN_ID [EXTRA...]
--   USERS_FILE: one "token<TAB>wallet_id<TAB>username" line per paying user.
--   EXTRA: the merchant's wallet id for `hot`, the items per batch for `batch`, the users' password for `login`.
-- Every thread counts answers by status. Money requests carry their Idempotency-Key as X-Request-ID too, which
-- the server echoes, so a thread knows which transfers were still unanswered when wrk stopped (or refused with a
-- 503, which asks the client to retry under the same key); done() prints
-- them with the counts as one "BENCH {json}" line, and the driver replays them under the same key.

local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

local scenario, run, extra
local users = {}
local counter = 0
statuses = {}
unanswered = {}

local function load_users(path)
  for line in io.lines(path) do
    local token, wallet, username = line:match("^(%S+)\t(%S+)\t(%S+)$")
    table.insert(users, { token = token, wallet = wallet, username = username })
  end
end

function init(args)
  scenario, run, extra = args[1], args[3], args[4]
  load_users(args[2])
  math.randomseed(os.time() * 1000 + id)
end

local function json_headers(token)
  local headers = { ["Content-Type"] = "application/json" }
  if token then
    headers["Authorization"] = "Bearer " .. token
  end
  return headers
end

local function transfer(to_wallet)
  local from = math.random(#users)
  if to_wallet == nil then
    local to = math.random(#users - 1)
    if to >= from then
      to = to + 1
    end
    to_wallet = users[to].wallet
  end
  counter = counter + 1
  local key = "bench-" .. run .. "-" .. id .. "-" .. counter
  unanswered[key] = from .. " " .. to_wallet
  local headers = json_headers(users[from].token)
  headers["Idempotency-Key"] = key
  headers["X-Request-ID"] = key
  local body = '{"from_wallet_id":"' .. users[from].wallet .. '","to_wallet_id":"' .. to_wallet .. '","amount":"0.01"}'
  return wrk.format("POST", "/api/v1/transfers", headers, body)
end

-- An independent batch of EXTRA transfers of 0.01 from a random wallet, each to a random other one; its key
-- remembers the sender and the recipients (user numbers), for the driver to send the same batch again.
local function batch()
  local from = math.random(#users)
  local items, picked = {}, {}
  for n = 1, tonumber(extra) do
    local to = math.random(#users - 1)
    if to >= from then
      to = to + 1
    end
    picked[n] = to
    items[n] = '{"reference":"r' .. n .. '","from_wallet_id":"' .. users[from].wallet .. '","to_wallet_id":"'
      .. users[to].wallet .. '","amount":"0.01"}'
  end
  counter = counter + 1
  local key = "bench-" .. run .. "-" .. id .. "-" .. counter
  unanswered[key] = from .. " " .. table.concat(picked, ",")
  local headers = json_headers(users[from].token)
  headers["Idempotency-Key"] = key
  headers["X-Request-ID"] = key
  local body = '{"mode":"independent","items":[' .. table.concat(items, ",") .. "]}"
  return wrk.format("POST", "/api/v1/transfers/batch", headers, body)
end

local reads = 0

local function read()
  local user = users[math.random(#users)]
  reads = reads + 1
  local what = reads % 2 == 0 and "/balance" or "/transactions"
  return wrk.format("GET", "/api/v1/wallets/" .. user.wallet .. what, json_headers(user.token))
end

-- A random seeded user's statement of their wallet's whole history.
local function statement()
  local user = users[math.random(#users)]
  return wrk.format("GET", "/api/v1/wallets/" .. user.wallet .. "/statement", json_headers(user.token))
end

local function login()
  local user = users[math.random(#users)]
  local body = '{"username":"' .. user.username .. '","password":"' .. extra .. '"}'
  return wrk.format("POST", "/api/v1/auth/login", json_headers(nil), body)
end

function request()
  if scenario == "transfer" then
    return transfer(nil)
  elseif scenario == "hot" then
    return transfer(extra)
  elseif scenario == "batch" then
    return batch()
  elseif scenario == "read" then
    return read()
  elseif scenario == "statement" then
    return statement()
  elseif scenario == "login" then
    return login()
  end
  return wrk.format("GET", "/health")
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  local key = headers["X-Request-Id"] or headers["X-Request-ID"]
  if key and status ~= 503 then -- SERVICE_UNAVAILABLE asks for a retry under the key: the driver replays it
    unanswered[key] = nil
  end
end

local function encode(value)
  if type(value) == "table" then
    local parts = {}
    for k, v in pairs(value) do
      table.insert(parts, encode(tostring(k)) .. ":" .. encode(v))
    end
    return "{" .. table.concat(parts, ",") .. "}"
  elseif type(value) == "string" then
    return '"' .. value .. '"'
  end
  return tostring(value)
end

function done(summary, latency, requests)
  local counts, pending = {}, {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      counts[status] = (counts[status] or 0) + n
    end
    for key, what in pairs(thread:get("unanswered")) do
      pending[key] = what
    end
  end
  local report = {
    requests = summary.requests,
    duration_us = summary.duration,
    errors = summary.errors,
    p50_us = latency:percentile(50),
    p99_us = latency:percentile(99),
    max_us = latency.max,
    statuses = counts,
    unanswered = pending,
  }
  io.write("BENCH ", encode(report), "\n")
end
