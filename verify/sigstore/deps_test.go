package sigstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sigstore/sigstore/pkg/cryptoutils"

	"github.com/bpfleet/bpfleet/internal/trust"
)

// sigstore-go's verify, bundle and root packages link net/http, crypto/tls, gRPC and a TUF
// client, so the import-level rule of package verify (no HTTP or TLS linked) cannot hold here.
// What holds instead, and is tested below:
//   - TestNoOnlineHelpers: this package's code (and the verify-bundle command) imports no
//     network, TUF or signing-client package and calls none of sigstore-go's online helpers
//     (root.FetchTrustedRoot*, root.GetTrustedRoot, root.NewLiveTrustedRoot*);
//   - TestDependencies: nothing linked is a signing or OIDC client, which verification never
//     needs;
//   - TestNoNetworkUse: verifying real bundles (every conformance case, with trusted roots,
//     Rekor entries, SCTs and timestamps) makes no HTTP request and no DNS lookup.

// packageFiles returns this package's non-test Go files and the verify-bundle command.
func packageFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	files = slices.DeleteFunc(files, func(f string) bool { return strings.HasSuffix(f, "_test.go") })
	return append(files, filepath.Join("..", "..", "cmd", "bpfleet", "bundle.go"))
}

func TestNoOnlineHelpers(t *testing.T) {
	forbiddenImports := []string{
		"net", "net/http", "crypto/tls",
		"github.com/sigstore/sigstore-go/pkg/tuf",
		"github.com/sigstore/sigstore-go/pkg/sign",
		"github.com/theupdateframework/go-tuf/v2/metadata/fetcher",
		"github.com/theupdateframework/go-tuf/v2/metadata/updater",
	}
	const rootPkg = "github.com/sigstore/sigstore-go/pkg/root"
	onlineRoot := []string{"FetchTrustedRoot", "FetchTrustedRootWithOptions", "GetTrustedRoot",
		"NewLiveTrustedRoot", "NewLiveTrustedRootFromTarget", "NewLiveTrustedRootFromTargetWithPeriod"}

	fset := token.NewFileSet()
	for _, path := range packageFiles(t) {
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		rootName := ""
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if slices.Contains(forbiddenImports, p) || strings.HasPrefix(p, "github.com/theupdateframework/") {
				t.Errorf("%s imports %s", path, p)
			}
			if p == rootPkg {
				rootName = "root"
				if imp.Name != nil {
					rootName = imp.Name.Name
				}
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			sel, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if x, ok := sel.X.(*ast.Ident); ok && x.Name == rootName && slices.Contains(onlineRoot, sel.Sel.Name) {
				t.Errorf("%s: uses root.%s, which goes online", fset.Position(sel.Pos()), sel.Sel.Name)
			}
			return true
		})
	}
}

func TestDependencies(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if !slices.Contains(deps, "github.com/sigstore/sigstore-go/pkg/verify") {
		t.Fatalf("go list output does not look like this package's dependencies: %v", deps)
	}
	for _, forbidden := range []string{
		"github.com/sigstore/sigstore-go/pkg/sign", // Fulcio, Rekor and TSA clients
		"github.com/sigstore/sigstore/pkg/oauthflow",
		"github.com/coreos/go-oidc/v3/oidc",
		"golang.org/x/oauth2",
		"github.com/dgraph-io/badger/v4",
	} {
		if slices.Contains(deps, forbidden) {
			t.Errorf("verify/sigstore depends on %s", forbidden)
		}
	}
}

// offline replaces the process's default HTTP transport and DNS resolver with ones that
// count and refuse every use, until the test ends.
func offline(t *testing.T) *atomic.Int64 {
	t.Helper()
	var attempts atomic.Int64
	transport, resolver := http.DefaultTransport, net.DefaultResolver
	http.DefaultTransport = roundTripFunc(func(r *http.Request) (*http.Response, error) {
		attempts.Add(1)
		return nil, errors.New("offline test: HTTP request to " + r.URL.String())
	})
	net.DefaultResolver = &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		attempts.Add(1)
		return nil, errors.New("offline test: DNS lookup")
	}}
	t.Cleanup(func() { http.DefaultTransport, net.DefaultResolver = transport, resolver })
	return &attempts
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestNoNetworkUse runs every sigstore-conformance bundle case through VerifyBundle, by path
// and by digest, with the suite's conventions (see cmd/bpfleet/conformance_test.go, which runs
// them through the CLI), and checks both the verdicts and that nothing went to the network.
func TestNoNetworkUse(t *testing.T) {
	root := shared(t, "sigstore-conformance")
	attempts := offline(t)
	if _, err := http.Get("http://example.invalid/"); err == nil || attempts.Load() == 0 {
		t.Fatalf("the offline guard does not see HTTP: %v", err)
	}
	attempts.Store(0)

	cases, err := os.ReadDir(filepath.Join(root, "bundle-verify"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		dir := filepath.Join(root, "bundle-verify", c.Name())
		at := func(name, fallback string) string {
			if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
				return filepath.Join(dir, name)
			}
			return fallback
		}
		opts := BundleOptions{TrustedRootJSON: readFile(t, at("trusted_root.json", filepath.Join(root, "trusted_root.json")))}
		if keyFile := at("key.pub", ""); keyFile != "" {
			k, err := loadPEMKey(keyFile)
			if err != nil {
				if !strings.HasSuffix(c.Name(), "_fail") {
					t.Errorf("%s: key: %v", c.Name(), err)
				}
				continue // an unloadable key rejects the case before verification
			}
			opts.Keys = []trust.Key{k}
		} else {
			opts.Identities = []Identity{{
				SubjectExact: "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main",
				IssuerExact:  "https://token.actions.githubusercontent.com",
			}}
		}
		artifactPath := at("artifact", filepath.Join(root, "a.txt"))
		sum := sha256.Sum256(readFile(t, artifactPath))
		byDigest, err := ArtifactDigest("sha256:" + hex.EncodeToString(sum[:]))
		if err != nil {
			t.Fatal(err)
		}
		bundleJSON := readFile(t, filepath.Join(dir, "bundle.sigstore.json"))
		for mode, artifact := range map[string]Artifact{"path": ArtifactFile(artifactPath), "digest": byDigest} {
			_, err := VerifyBundle(bundleJSON, artifact, opts)
			if want := !strings.HasSuffix(c.Name(), "_fail"); (err == nil) != want {
				t.Errorf("%s by %s: err = %v, want verified = %v", c.Name(), mode, err, want)
			}
		}
	}
	if n := attempts.Load(); n != 0 {
		t.Errorf("verification tried the network %d time(s)", n)
	}
}

// loadPEMKey loads a PEM public key the way the verify-bundle command does, failing on keys
// that do not parse (the managed-key-wrong-key_fail case has one).
func loadPEMKey(path string) (trust.Key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return trust.Key{}, err
	}
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(data)
	if err != nil {
		return trust.Key{}, err
	}
	der, err := cryptoutils.MarshalPublicKeyToDER(pub)
	if err != nil {
		return trust.Key{}, err
	}
	return trust.Key{DER: der}, nil
}
