// GETs each URL with net/http's defaults (HTTPS_PROXY, SSL_CERT_FILE); prints "STATUS BODY".
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
)

func main() {
	for _, url := range os.Args[1:] {
		resp, err := http.Get(url)
		if err != nil {
			fmt.Println("0", strings.ReplaceAll(err.Error(), "\n", " "))
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(resp.StatusCode, strings.TrimSpace(string(body)))
	}
}
