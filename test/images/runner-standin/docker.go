package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// dockerClient speaks the Docker Engine HTTP API over its unix socket, the
// few calls a step needs. The path is unversioned: the daemon answers at its
// own API version (20.10's is 1.41).
type dockerClient struct {
	http *http.Client
}

func newDockerClient(host string) (*dockerClient, error) {
	sock, ok := strings.CutPrefix(host, "unix://")
	if !ok {
		return nil, fmt.Errorf("DOCKER_HOST %q: only unix:// sockets are supported", host)
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}
	return &dockerClient{http: &http.Client{Transport: tr}}, nil
}

type dockerError struct {
	Message string `json:"message"`
}

// do sends a request to the daemon ("docker" is only the URL's host) and
// returns the answer, an error for any status of 300 or more.
func (d *dockerClient) do(ctx context.Context, method, path string, query url.Values, body io.Reader, contentType string) (*http.Response, error) {
	u := "http://docker" + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var de dockerError
		if json.Unmarshal(b, &de) == nil && de.Message != "" {
			return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, de.Message)
		}
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	return resp, nil
}

func (d *dockerClient) doJSON(ctx context.Context, method, path string, query url.Values, in, out any) error {
	var body io.Reader
	ct := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body, ct = bytes.NewReader(b), "application/json"
	}
	resp, err := d.do(ctx, method, path, query, body, ct)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// waitReady waits until the daemon answers /_ping: dind is a native sidecar
// that the kubelet starts first, but the socket may still be coming up.
func (d *dockerClient) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var err error
	for {
		var resp *http.Response
		if resp, err = d.do(ctx, http.MethodGet, "/_ping", nil, nil, ""); err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready after %s: %w", timeout, err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// loadImage loads an image archive (docker save's format; the project's
// archives carry it beside the OCI layout) into the daemon.
func (d *dockerClient) loadImage(ctx context.Context, archive string) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	resp, err := d.do(ctx, http.MethodPost, "/images/load", url.Values{"quiet": {"1"}}, f, "application/x-tar")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	// The answer is a JSON message stream; a failure mid-way is a message
	// with an error, not a status.
	dec := json.NewDecoder(resp.Body)
	for {
		var msg struct {
			Stream string `json:"stream"`
			Error  string `json:"error"`
		}
		if err := dec.Decode(&msg); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
		if msg.Error != "" {
			return errors.New(msg.Error)
		}
	}
}

type containerConfig struct {
	Image      string            `json:"Image"`
	Cmd        []string          `json:"Cmd"`
	Env        []string          `json:"Env,omitempty"`
	WorkingDir string            `json:"WorkingDir,omitempty"`
	Labels     map[string]string `json:"Labels,omitempty"`
	HostConfig hostConfig        `json:"HostConfig"`
}

type hostConfig struct {
	Binds []string `json:"Binds,omitempty"`
}

func (d *dockerClient) createContainer(ctx context.Context, name string, cfg containerConfig) (string, error) {
	var out struct {
		ID string `json:"Id"`
	}
	err := d.doJSON(ctx, http.MethodPost, "/containers/create", url.Values{"name": {name}}, cfg, &out)
	return out.ID, err
}

func (d *dockerClient) startContainer(ctx context.Context, id string) error {
	return d.doJSON(ctx, http.MethodPost, "/containers/"+id+"/start", nil, nil, nil)
}

// waitContainer blocks until the container exits and returns its exit code.
func (d *dockerClient) waitContainer(ctx context.Context, id string) (int, error) {
	var out struct {
		StatusCode int `json:"StatusCode"`
		Error      *struct {
			Message string `json:"Message"`
		} `json:"Error"`
	}
	if err := d.doJSON(ctx, http.MethodPost, "/containers/"+id+"/wait", url.Values{"condition": {"not-running"}}, nil, &out); err != nil {
		return 0, err
	}
	if out.Error != nil && out.Error.Message != "" {
		return out.StatusCode, errors.New(out.Error.Message)
	}
	return out.StatusCode, nil
}

func (d *dockerClient) stopContainer(ctx context.Context, id string) error {
	return d.doJSON(ctx, http.MethodPost, "/containers/"+id+"/stop", url.Values{"t": {"5"}}, nil, nil)
}

// logs returns the container's output, stdout and stderr interleaved as
// written, at most limit bytes of it.
func (d *dockerClient) logs(ctx context.Context, id string, limit int) (string, error) {
	resp, err := d.do(ctx, http.MethodGet, "/containers/"+id+"/logs", url.Values{"stdout": {"1"}, "stderr": {"1"}}, nil, "")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	return demux(resp.Body, limit)
}

// demux reads the stream format of a container without a TTY: frames of an
// 8-byte header (stream, 0, 0, 0, big-endian length) and the payload.
func demux(r io.Reader, limit int) (string, error) {
	var out bytes.Buffer
	var hdr [8]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return out.String(), nil
			}
			return out.String(), err
		}
		n := int64(binary.BigEndian.Uint32(hdr[4:]))
		room := int64(max(0, limit-out.Len()))
		if _, err := io.CopyN(&out, r, min(n, room)); err != nil {
			return out.String(), err
		}
		if n > room {
			if _, err := io.CopyN(io.Discard, r, n-room); err != nil {
				return out.String(), err
			}
		}
	}
}

func (d *dockerClient) removeContainer(ctx context.Context, id string) error {
	return d.doJSON(ctx, http.MethodDelete, "/containers/"+id, url.Values{"force": {"1"}, "v": {"1"}}, nil, nil)
}
