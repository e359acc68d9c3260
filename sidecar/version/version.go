// Package version holds the build's version and commit, stamped at link time
// with -ldflags "-X github.com/portbridge/portbridge/sidecar/version.Version=…
// -X github.com/portbridge/portbridge/sidecar/version.Commit=…".
package version

import "runtime/debug"

// Version and Commit are set by the linker; they are never written at run
// time.
var (
	Version = "dev"
	Commit  = ""
)

// CommitID returns the stamped commit, or the VCS revision Go recorded in the
// build, or "unknown".
func CommitID() string {
	if Commit != "" {
		return Commit
	}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}

// String returns "VERSION (COMMIT)".
func String() string {
	return Version + " (" + CommitID() + ")"
}
