// Package appleg is the router's leg to its own app: one engine that sends a request to an
// app instance over a pool of keep-alive loopback connections and writes the app's answer
// to the client as httputil.ReverseProxy would.
package appleg
