package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The sigstore-conformance bundle-verification cases, run through the client protocol
// (`bpfleet verify-bundle ...`) the way the suite runs a client: once with the artifact's
// path and once with its sha256 digest. A case whose directory name ends in `_fail` must be
// rejected (non-zero exit, a reason on stderr); every other must verify (exit 0).
//
// With BPFLEET_BUILD set (`make test`), the built binary is run; otherwise the same cobra
// command runs in-process (an error there is exactly what makes main exit non-zero).

// Conventions of the suite for a case directory without its own files.
const (
	conformanceIdentity = "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"
	conformanceIssuer   = "https://token.actions.githubusercontent.com"
)

func conformanceDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join("..", "..", "..", "shared", "fixtures", "sigstore-conformance")
	if _, err := os.Stat(filepath.Join(dir, "bundle-verify")); err != nil {
		t.Skipf("shared sigstore-conformance fixture not available (want ../shared next to the repository root): %v", err)
	}
	return dir
}

// conformanceArgs builds the protocol's arguments for one case, following the suite's
// conventions: the case's own artifact, key.pub and trusted_root.json when present, else
// ../a.txt, the default identity and issuer, and the production trusted root.
func conformanceArgs(t *testing.T, root, caseDir string) (args []string, artifact string) {
	t.Helper()
	have := func(name string) bool {
		_, err := os.Stat(filepath.Join(caseDir, name))
		return err == nil
	}
	artifact = filepath.Join(root, "a.txt")
	if have("artifact") {
		artifact = filepath.Join(caseDir, "artifact")
	}
	trustedRoot := filepath.Join(root, "trusted_root.json")
	if have("trusted_root.json") {
		trustedRoot = filepath.Join(caseDir, "trusted_root.json")
	}
	args = []string{"verify-bundle", "--bundle", filepath.Join(caseDir, "bundle.sigstore.json")}
	if have("key.pub") {
		args = append(args, "--key", filepath.Join(caseDir, "key.pub"))
	} else {
		args = append(args, "--certificate-identity", conformanceIdentity, "--certificate-oidc-issuer", conformanceIssuer)
	}
	return append(args, "--trusted-root", trustedRoot), artifact
}

// runClient runs the client with args and returns whether it succeeded and its output.
func runClient(t *testing.T, args []string) (ok bool, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	if build := os.Getenv("BPFLEET_BUILD"); build != "" {
		cmd := exec.Command(filepath.Join(build, "bin", "bpfleet"), args...)
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		if _, exited := err.(*exec.ExitError); err != nil && !exited {
			t.Fatalf("run bpfleet: %v (run `make binaries`)", err)
		}
		return err == nil, out.String(), errOut.String()
	}
	c := verifyBundleCmd()
	c.SetArgs(args[1:])
	c.SetOut(&out)
	c.SetErr(&errOut)
	c.SilenceUsage, c.SilenceErrors = true, true
	err := c.Execute()
	if err != nil {
		errOut.WriteString(err.Error())
	}
	return err == nil, out.String(), errOut.String()
}

func TestSigstoreConformanceBundleVerify(t *testing.T) {
	root := conformanceDir(t)
	if os.Getenv("BPFLEET_BUILD") == "" {
		t.Log("BPFLEET_BUILD is not set: running the verify-bundle command in-process instead of the built binary")
	}
	cases, err := os.ReadDir(filepath.Join(root, "bundle-verify"))
	if err != nil {
		t.Fatal(err)
	}
	if len(cases) == 0 {
		t.Fatal("no conformance cases")
	}
	for _, c := range cases {
		if !c.IsDir() {
			continue
		}
		caseDir := filepath.Join(root, "bundle-verify", c.Name())
		wantOK := !strings.HasSuffix(c.Name(), "_fail")
		args, artifact := conformanceArgs(t, root, caseDir)
		data, err := os.ReadFile(artifact)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		for _, mode := range []struct{ name, arg string }{
			{"path", artifact},
			{"digest", "sha256:" + hex.EncodeToString(sum[:])},
		} {
			t.Run(c.Name()+"/"+mode.name, func(t *testing.T) {
				ok, stdout, stderr := runClient(t, append(args, mode.arg))
				switch {
				case wantOK && !ok:
					t.Errorf("rejected, want verified:\n%s", stderr)
				case !wantOK && ok:
					t.Errorf("verified, want rejected:\n%s", stdout)
				case !ok && strings.TrimSpace(stderr) == "":
					t.Error("rejected without a reason on stderr")
				case ok && !strings.Contains(stdout, "verified "+mode.arg):
					t.Errorf("verified, but stdout does not say so: %q", stdout)
				}
			})
		}
	}
}
