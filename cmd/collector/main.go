package main
import (
 _ "github.com/valyala/fasthttp"
 _ "github.com/ClickHouse/clickhouse-go/v2"
 _ "github.com/mssola/useragent"
 _ "github.com/oschwald/geoip2-golang"
 _ "github.com/prometheus/client_golang/prometheus"
 _ "github.com/redis/go-redis/v9"
 _ "github.com/ebitengine/purego"
 _ "github.com/maxmind/mmdbwriter"
 _ "github.com/chromedp/chromedp"
 _ "github.com/fasthttp/websocket"
 _ "github.com/evanw/esbuild/pkg/api"
 _ "github.com/andybalholm/brotli"
 _ "gopkg.in/yaml.v3"
 _ "github.com/dchest/siphash"
)
func main(){}
