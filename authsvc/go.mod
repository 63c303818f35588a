module github.com/phxnats/phxnats/authsvc

go 1.26.8
