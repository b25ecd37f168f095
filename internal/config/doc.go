// Package config loads porthole-relay's and porthole-agent's YAML files
// strictly: unknown or duplicate keys and wrong types are errors, ${ENV}
// references are expanded in values, *_file keys read secrets from files,
// and every problem is reported with its file, line and key path.
package config
