module github.com/phxnats/phxnats/allinone

go 1.26.8
