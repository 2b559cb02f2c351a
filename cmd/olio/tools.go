//go:build tools

// Package main pins the module dependencies before the code that uses them lands.
package main
import (
 _ "github.com/hashicorp/yamux"
 _ "github.com/cespare/xxhash/v2"
 _ "golang.org/x/sys/unix"
 _ "github.com/urfave/cli/v2"
 _ "github.com/prometheus/client_golang/prometheus"
 _ "github.com/prometheus/client_golang/prometheus/promhttp"
 _ "github.com/prometheus/common/expfmt"
 _ "github.com/gorilla/websocket"
 _ "go.uber.org/goleak"
)
func main(){}
