-- POST /orders with varying bodies. With BENCH_LIMIT set, each thread stops after its share.
local counter = 0
local limit = tonumber(os.getenv("BENCH_LIMIT") or "0")
local threads = tonumber(os.getenv("BENCH_THREADS") or "1")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function request()
  counter = counter + 1
  local cents = (counter * 7919) % 100000 + 1
  local body = string.format(
    '{"customer_id":"bench-%d","product_id":"product-%d","quantity":%d,"total_amount":%d.%02d}',
    counter % 1000, counter % 50, counter % 5 + 1, math.floor(cents / 100), cents % 100)
  return wrk.format(nil, "/orders", nil, body)
end

function response(status)
  if status ~= 201 then
    io.stderr:write("unexpected status " .. status .. "\n")
  end
  if limit > 0 and counter >= limit / threads then
    wrk.thread:stop()
  end
end
