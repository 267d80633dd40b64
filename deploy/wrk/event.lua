-- wrk script: a realistic mix of Plausible-style beacons for POST /api/event, the same shape as
-- cmd/loadgen sends (rotating browser user agents with ~3% bots, domains, IPv4/IPv6 clients in
-- X-Forwarded-For, paths, referrers, UTM, props, custom events with revenue).
--
--   loadgen -print-config -domains 200 > /tmp/ws.yaml          # site0000.example .. site0199.example
--   collector serve -config /tmp/ws.yaml -trusted-proxies 127.0.0.1/32,::1/128 &
--   WRK_DOMAINS=200 wrk -t2 -c64 -d20s -s deploy/wrk/event.lua http://127.0.0.1:8080
--   loadgen baseline -listen 127.0.0.1:9090 &                   # the empty handler, same script
--   WRK_DOMAINS=200 wrk -t2 -c64 -d20s -s deploy/wrk/event.lua http://127.0.0.1:9090
--
-- Requests are prepared once per thread (WRK_POOL of them, default 4096) and cycled, so wrk spends
-- its CPU on sockets, not on Lua string building: on a 2-core machine the generator's CPU is
-- taken from the server under test. The summary counts non-2xx answers and, per thread, the
-- 202 answers that carried X-Collector-Dropped.

local ndomains = tonumber(os.getenv("WRK_DOMAINS") or "200")
local poolsize = tonumber(os.getenv("WRK_POOL") or "4096")

local browsers = {
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1.1 Safari/605.1.15",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:133.0) Gecko/20100101 Firefox/133.0",
  "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
  "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1.1 Mobile/15E148 Safari/604.1",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 17_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.7 Mobile/15E148 Safari/604.1",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1",
  "Mozilla/5.0 (iPad; CPU OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
  "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
  "Mozilla/5.0 (Linux; Android 14; SM-S928B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.81 Mobile Safari/537.36",
  "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.81 Mobile Safari/537.36",
  "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36",
  "Mozilla/5.0 (Android 14; Mobile; rv:133.0) Gecko/133.0 Firefox/133.0",
}
local bots = {
  "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
  "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
  "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
  "curl/8.5.0",
  "python-requests/2.32.3",
}
local paths = { "/", "/", "/", "/pricing", "/blog", "/blog/launch-week", "/docs", "/docs/getting-started",
  "/about", "/contact", "/features", "/signup", "/products/widget-pro", "/checkout", "/de/preise" }
local referrers = { "", "", "", "", "https://www.google.com/", "https://www.google.com/", "https://www.bing.com/",
  "https://duckduckgo.com/", "https://t.co/", "https://news.ycombinator.com/", "https://www.reddit.com/r/programming/",
  "https://www.facebook.com/", "https://github.com/kyomi/collector" }
local utms = { "utm_source=newsletter&utm_medium=email&utm_campaign=november",
  "utm_source=twitter&utm_medium=social&utm_campaign=launch", "gclid=EAIaIQobChMI8f3k2a", "ref=producthunt" }
local customs = { "Signup", "Download", "Outbound Link: Click", "Purchase" }
local languages = { "en-US,en;q=0.9", "de-DE,de;q=0.9,en;q=0.8", "fr-FR,fr;q=0.9", "ja,en;q=0.7" }

local function pick(t) return t[math.random(#t)] end

local function ipv4()
  while true do
    local a = math.random(1, 223)
    if a ~= 10 and a ~= 127 and a ~= 100 and a ~= 169 and a ~= 172 and a ~= 192 then -- no private, loopback, CGNAT or link-local
      return string.format("%d.%d.%d.%d", a, math.random(0, 255), math.random(0, 255), math.random(1, 254))
    end
  end
end

local function ipv6()
  return string.format("2a%02x:%x:%x:%x:%x:%x:%x:%x", math.random(0, 15), math.random(0, 65535),
    math.random(0, 65535), math.random(0, 65535), math.random(0, 65535), math.random(0, 65535),
    math.random(0, 65535), math.random(1, 65535))
end

local function domain()
  local u = math.random()
  return string.format("site%04d.example", math.floor(ndomains * u * u * u))
end

local function beacon()
  local d = domain()
  local page = "https://" .. d .. pick(paths)
  if math.random(5) == 1 then page = page .. "?" .. pick(utms) end
  local body = '{"n":"pageview","u":"' .. page .. '","d":"' .. d .. '"'
  local ref = pick(referrers)
  if ref ~= "" then body = body .. ',"r":"' .. ref .. '"' end
  if math.random(7) == 1 then
    local name = pick(customs)
    body = '{"n":"' .. name .. '","u":"' .. page .. '","d":"' .. d .. '"'
    if name == "Purchase" then
      body = body .. string.format(',"$":{"amount":"%d.%02d","currency":"EUR"},"p":{"plan":"pro"}',
        math.random(1, 500), math.random(0, 99))
    elseif name == "Outbound Link: Click" then
      body = body .. ',"p":{"url":"https://partner.example.org/"}'
    end
  elseif math.random(4) == 1 then
    body = body .. ',"p":{"author":"author' .. math.random(20) .. '"}'
  end
  body = body .. "}"
  local bot = math.random(100) <= 3
  local headers = {
    ["Content-Type"] = "text/plain",
    ["User-Agent"] = bot and pick(bots) or pick(browsers),
    ["X-Forwarded-For"] = (math.random(10) <= 3) and ipv6() or ipv4(),
  }
  if not bot then
    headers["Origin"] = "https://" .. d
    headers["Referer"] = page
    headers["Accept-Language"] = pick(languages)
  end
  return wrk.format("POST", "/api/event", headers, body)
end

local threads = {}
local counter = 1

function setup(thread)
  thread:set("id", counter)
  table.insert(threads, thread)
  counter = counter + 1
end

local pool = {}
local i = 0
dropped = 0

function init(args)
  math.randomseed((id or 1) * 7919 + os.time())
  for n = 1, poolsize do pool[n] = beacon() end
end

function request()
  i = i % poolsize + 1
  return pool[i]
end

function response(status, headers, body)
  if headers["X-Collector-Dropped"] or headers["x-collector-dropped"] then
    dropped = dropped + 1
  end
end

function done(summary, latency, requests)
  local d = 0
  for _, t in ipairs(threads) do d = d + (t:get("dropped") or 0) end
  local errs = summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format("answers/s %.0f, dropped (202 + X-Collector-Dropped) %d, non-2xx %d, socket errors %d\n",
    summary.requests / (summary.duration / 1e6), d, summary.errors.status, errs - summary.errors.status))
  io.write(string.format("latency p50 %.3fms p99 %.3fms p99.9 %.3fms max %.3fms\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000, latency.max / 1000))
end
