package port

import (
	"fmt"
	"regexp"
	"strings"
)

// The User-Agent this client sends names the product, the source it syncs,
// the version and the integration identifier, in the order Port's own
// integrations use (type/version/identifier/feature):
//
//	portbridge/backstage/<version>/<integration identifier>/exporter
//
// Port records the User-Agent of every entity write as the entity's data
// source, so the identifier — from configuration, stable across restarts
// and lost state files — is what ties entities to this installation, and
// DatasourcePrefix and DatasourceSuffix find them again whatever version
// wrote them.
const (
	Product                      = "portbridge"
	IntegrationType              = "backstage"
	UserAgentFeature             = "exporter"
	DefaultIntegrationIdentifier = "portbridge"
	MaxIntegrationIdentifier     = 100
)

// integrationIDPattern keeps identifiers usable as one User-Agent segment
// and one URL path segment.
var integrationIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// ValidateIntegrationIdentifier checks an integration identifier: letters,
// digits, '.', '_' and '-', starting with a letter or digit, at most 100
// characters.
func ValidateIntegrationIdentifier(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("integration identifier is empty")
	case len(id) > MaxIntegrationIdentifier:
		return fmt.Errorf("integration identifier %q is %d characters long, the limit is %d", id, len(id), MaxIntegrationIdentifier)
	case !integrationIDPattern.MatchString(id):
		return fmt.Errorf("integration identifier %q may hold only letters, digits, '.', '_' and '-', starting with a letter or digit", id)
	}
	return nil
}

// UserAgent returns the User-Agent for a version and integration
// identifier (see the package constants).
func UserAgent(version, identifier string) string {
	return DatasourcePrefix() + segment(version, "dev") + DatasourceSuffix(identifier)
}

// DatasourcePrefix is how every User-Agent of this product begins.
func DatasourcePrefix() string { return Product + "/" + IntegrationType + "/" }

// DatasourceSuffix is how the User-Agent of one installation ends.
func DatasourceSuffix(identifier string) string {
	return "/" + segment(identifier, DefaultIntegrationIdentifier) + "/" + UserAgentFeature
}

// segment makes s one '/'-free, space-free User-Agent segment.
func segment(s, fallback string) string {
	s = strings.Map(func(r rune) rune {
		if r == '/' || r <= ' ' || r == 0x7f {
			return '-'
		}
		return r
	}, s)
	if s == "" {
		return fallback
	}
	return s
}
