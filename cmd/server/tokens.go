package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentry-dev/agentry/internal/jobapi"
)

// tokenCommand manages named admin tokens through the server's token API.
func (c *cli) tokenCommand() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke admin tokens",
		Long: "Admin tokens are named, revocable credentials for the pool-admin and job API, beside the\n" +
			"bootstrap token the server was started with. The server keeps only their SHA-256 hashes:\n" +
			"a token is shown once, when it is created.",
		Args: cobra.NoArgs,
	}
	c.addClientFlags(cmd, &f)

	var name string
	var expires time.Duration
	create := &cobra.Command{
		Use:     "create --name NAME [--expires DURATION]",
		Short:   "Create an admin token; prints the token, once",
		Example: "  agentry-server token create --name ci --expires 720h",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client(&f)
			if err != nil {
				return err
			}
			req := jobapi.CreateTokenRequest{Name: name}
			if expires < 0 {
				return fmt.Errorf("--expires %v: want a positive duration", expires)
			}
			if expires > 0 {
				at := time.Now().Add(expires).UTC()
				req.ExpiresOn = &at
			}
			t, err := cl.CreateToken(cmd.Context(), req)
			if err != nil {
				return err
			}
			fmt.Fprintln(c.stdout, t.Token)
			return nil
		},
	}
	create.Flags().StringVar(&name, "name", "", "the token's name, unique among live tokens (required)")
	create.Flags().DurationVar(&expires, "expires", 0, "how long the token works, e.g. 720h; default: until revoked")
	_ = create.MarkFlagRequired("name")

	list := &cobra.Command{
		Use:   "list",
		Short: "List admin tokens (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client(&f)
			if err != nil {
				return err
			}
			ts, err := cl.ListTokens(cmd.Context())
			if err != nil {
				return err
			}
			when := func(t *time.Time) string {
				if t == nil {
					return "-"
				}
				return t.Local().Format(time.RFC3339)
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tSTATE\tCREATED\tEXPIRES\tREVOKED")
			for _, t := range ts {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Name, t.State, when(&t.CreatedOn), when(t.ExpiresOn), when(t.RevokedOn))
			}
			return tw.Flush()
		},
	}

	revoke := &cobra.Command{
		Use:   "revoke NAME|ID",
		Short: "Revoke an admin token; it stops working at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client(&f)
			if err != nil {
				return err
			}
			t, err := cl.RevokeToken(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "revoked token %d (%s)\n", t.ID, t.Name)
			return nil
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}
