package api

import _ "embed"

// openAPIDoc is the API's OpenAPI 3 description, served at
// /api/v1/openapi.json. Keep it in step with the route table: a test
// checks every route is described and every described path is served.
//
//go:embed openapi.json
var openAPIDoc []byte
