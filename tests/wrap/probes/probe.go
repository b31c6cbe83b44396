// Connects to 127.0.0.1:PORT as NAME with the system roots (SSL_CERT_FILE); prints ok/refused.
package main

import (
	"crypto/tls"
	"fmt"
	"os"
)

func main() {
	args := os.Args[1:]
	for i := 0; i+1 < len(args); i += 2 {
		conn, err := tls.Dial("tcp", "127.0.0.1:"+args[i+1], &tls.Config{ServerName: args[i]})
		if err != nil {
			fmt.Println("refused", args[i])
			continue
		}
		conn.Close()
		fmt.Println("ok", args[i])
	}
}
