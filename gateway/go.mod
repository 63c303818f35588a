module github.com/phxnats/phxnats/gateway

go 1.26.8
