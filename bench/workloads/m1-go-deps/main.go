// bench/mounts.sh's workload: a small registry, git and gRPC tool whose dependencies (cobra,
// logrus, errgroup, go-containerregistry's remote, go-git, grpc) come vendored from kaniko
// v1.9.0's tree, about 220 packages that take about 20 s of CPU to compile.
package main

import (
	"fmt"
	"os"

	"github.com/go-git/go-git/v5"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
)

var version = "1" // bench/mounts.sh rewrites this line before each build

func main() {
	root := &cobra.Command{Use: "app", Version: version}
	root.AddCommand(&cobra.Command{
		Use:   "digest IMAGE...",
		Short: "print the digest of each image",
		RunE: func(_ *cobra.Command, args []string) error {
			var g errgroup.Group
			for _, a := range args {
				a := a
				g.Go(func() error {
					ref, err := name.ParseReference(a)
					if err != nil {
						return err
					}
					d, err := remote.Head(ref, remote.WithAuthFromKeychain(authn.DefaultKeychain))
					if err != nil {
						return err
					}
					logrus.WithField("image", ref.String()).Info(d.Digest.String())
					return nil
				})
			}
			return g.Wait()
		},
	})
	root.AddCommand(&cobra.Command{
		Use:   "clone URL DIR",
		Short: "clone a git repository",
		Args:  cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			_, err := git.PlainClone(args[1], false, &git.CloneOptions{URL: args[0], Progress: os.Stderr})
			return err
		},
	})
	root.AddCommand(&cobra.Command{
		Use:   "dial ADDR",
		Short: "wait until a gRPC server is ready",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			conn, err := grpc.Dial(args[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return err
			}
			defer conn.Close()
			conn.Connect()
			for s := conn.GetState(); s != connectivity.Ready; s = conn.GetState() {
				if !conn.WaitForStateChange(c.Context(), s) {
					return c.Context().Err()
				}
			}
			fmt.Println("ready")
			return nil
		},
	})
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
