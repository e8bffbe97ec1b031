import H2TRegistry
import Testing

@Suite("Head references")
struct ReferenceTests {
    @Test func parsesTheThreeForms() throws {
        #expect(try HeadReference(parsing: "pets") == HeadReference(task: "pets"))
        #expect(try HeadReference(parsing: "pets@v12") == HeadReference(task: "pets", selector: .version(12)))
        #expect(try HeadReference(parsing: "pets@3") == HeadReference(task: "pets", selector: .version(3)))
        #expect(try HeadReference(parsing: "pets@prod") == HeadReference(task: "pets", selector: .alias("prod")))
        #expect(try HeadReference(parsing: "vtab/dtd@staging").description == "vtab/dtd@staging")
    }

    @Test(arguments: ["", "@prod", "pets@", "pets@v0", "pets@prod@x", "pe ts", "pets@-x"])
    func rejectsMalformedReferences(_ text: String) {
        #expect(throws: RegistryError.self) { try HeadReference(parsing: text) }
    }
}
