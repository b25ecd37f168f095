package gateway

import "log/slog"

// Credentials are a login: the camera's (camera_login), which the http and
// rtsp handlers send upstream. Printed or logged, the password shows as
// [redacted].
type Credentials struct {
	Username, Password string
}

// String hides the password.
func (c Credentials) String() string { return c.Username + ":[redacted]" }

// GoString hides the password from %#v.
func (c Credentials) GoString() string { return "Credentials{" + c.String() + "}" }

// LogValue hides the password from slog.
func (c Credentials) LogValue() slog.Value { return slog.StringValue(c.String()) }
