package main

import (
	"crypto/tls"
	"fmt"
	"sync/atomic"
)

// certReloader serves the certificate loaded most recently from a key pair on disk. Reload swaps
// it atomically, so a SIGHUP picks up a renewed certificate without dropping connections; a
// failed reload keeps the previous certificate.
type certReloader struct {
	certFile, keyFile string
	cert              atomic.Pointer[tls.Certificate]
}

func newCertReloader(certFile, keyFile string) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Reload reads the key pair again.
func (r *certReloader) Reload() error {
	c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("cannot load TLS key pair %s: %w", r.certFile, err)
	}
	r.cert.Store(&c)
	return nil
}

// tlsConfig is the server TLS configuration: TLS 1.3 unless the operator allows 1.2, with
// certificates from r.
func (r *certReloader) tlsConfig(minVersion string) *tls.Config {
	min := uint16(tls.VersionTLS13)
	if minVersion == "1.2" {
		min = tls.VersionTLS12
	}
	return &tls.Config{
		MinVersion: min,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return r.cert.Load(), nil
		},
	}
}
